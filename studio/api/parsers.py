import yaml
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser


class YAMLParser(BaseParser):
    """Request bodies in YAML, so a file written for `az ml` can be sent as it is."""

    media_type = "application/yaml"

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = yaml.safe_load(stream.read().decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ParseError(f"The body is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ParseError("The YAML body must be a mapping of fields.")
        return data
