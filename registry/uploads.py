"""An upload handler that refuses uploads over STUDIO_MAX_UPLOAD_BYTES while they stream in."""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler

from studio.api.errors import PayloadTooLarge


def _too_large() -> PayloadTooLarge:
    limit = settings.STUDIO_MAX_UPLOAD_BYTES
    return PayloadTooLarge(
        f"The upload is larger than {limit} bytes; upload a smaller model or ask an admin to raise "
        "STUDIO_MAX_UPLOAD_BYTES."
    )


class BoundedUploadHandler(FileUploadHandler):
    """First in the chain: counts bytes and passes them on to the handlers that store them."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.received = 0
        if content_length and content_length > settings.STUDIO_MAX_UPLOAD_BYTES:
            raise _too_large()

    def receive_data_chunk(self, raw_data, start):
        self.received = getattr(self, "received", 0) + len(raw_data)
        if self.received > settings.STUDIO_MAX_UPLOAD_BYTES:
            raise _too_large()
        return raw_data

    def file_complete(self, file_size):
        return None
