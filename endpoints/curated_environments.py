"""Azure ML's curated environments, by the names Azure YAML files use, from specs that ship with Studio.

A deployment written for Azure may name a curated environment instead of its own:

    environment: azureml://registries/azureml/environments/sklearn-1.5/versions/14
    environment: azureml://registries/azureml/environments/sklearn-1.5/labels/latest
    environment: azureml:AzureML-sklearn-1.5@latest
    environment: azureml:AzureML-sklearn-1.5-ubuntu20.04-py38-cpu:3

Each resolves to the conda specification Studio ships for that family (`endpoints/curated/*.yaml`: the
Python version and the package set Azure's image has, less Azure's own server, which Studio's model
server replaces). It is then an inline environment like any other: checked, and built on first use by the
environment build (cached by content, so every deployment naming it shares one build). Names differ from
Azure's only in suffixes that describe Azure's image (`-ubuntu20.04`, `-py38`, `-cpu`, `-inference`),
which are ignored. Studio ships one version of each spec: a deployment that asks for another version gets
Studio's, with a warning that says so. A name Studio has no spec for is refused, listing those it has.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

FOLDER = Path(__file__).resolve().parent / "curated"
REGISTRY_RE = re.compile(
    r"^azureml://registries/azureml/environments/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?:/versions/(?P<version>[A-Za-z0-9._-]+)|/labels/(?P<label>[A-Za-z0-9._-]+))?/?\Z"
)
WORKSPACE_RE = re.compile(
    r"^(?:azureml:)?(?P<name>AzureML-[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?::(?P<version>[A-Za-z0-9._-]+)|@(?P<label>[A-Za-z0-9._-]+))?\Z",
    re.IGNORECASE,
)
IMAGE_SUFFIX_RE = re.compile(r"-(?:ubuntu\d+(?:\.\d+)?|py\d+|cpu|inference)(?=-|$)", re.IGNORECASE)


class UnknownCurated(ValueError):
    """A curated environment name Studio has no spec for; the message lists those it has."""


@dataclass(frozen=True)
class Curated:
    name: str
    version: str
    description: str
    conda_file: dict

    @property
    def asset_id(self) -> str:
        return f"azureml://registries/azureml/environments/{self.name}/versions/{self.version}"


def family(name: str) -> str:
    """The family key of an Azure name: `AzureML-sklearn-1.5-ubuntu20.04-py38-cpu` -> `sklearn-1.5`."""
    bare = re.sub(r"^azureml-", "", name, flags=re.IGNORECASE)
    return IMAGE_SUFFIX_RE.sub("", bare).lower()


@functools.lru_cache(maxsize=1)
def shipped() -> dict[str, Curated]:
    """Every curated spec that ships with Studio, by family."""
    found = {}
    for path in sorted(FOLDER.glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        spec = Curated(
            str(document["name"]),
            str(document.get("version", 1)),
            str(document.get("description", "")),
            document["conda_file"],
        )
        found[family(spec.name)] = spec
    return found


def is_curated_reference(reference: str) -> bool:
    """Whether `reference` names an environment the way Azure names its curated ones."""
    return bool(REGISTRY_RE.match(reference) or WORKSPACE_RE.match(reference))


def resolve(reference: str, warnings: list[str]) -> Curated:
    """The shipped spec `reference` names; UnknownCurated when there is none (or the name is malformed)."""
    match = REGISTRY_RE.match(reference) or WORKSPACE_RE.match(reference)
    if match is None:
        raise UnknownCurated(f"{reference!r} is not a curated environment reference.")
    spec = shipped().get(family(match["name"]))
    if spec is None:
        names = ", ".join(f"{s.name} (azureml:AzureML-{s.name}@latest)" for s in shipped().values())
        raise UnknownCurated(
            f"{reference!r} names a curated environment Studio has no specification for. Those it has: "
            f"{names}. Or register your own with `studio environment create -f env.yml`."
        )
    if match["label"] and match["label"].lower() != "latest":
        raise UnknownCurated(f"{reference!r}: curated environments have the label 'latest' only.")
    if match["version"] and match["version"] != spec.version:
        warnings.append(
            f"environment {reference!r}: Studio ships version {spec.version} of {spec.name}'s specification "
            f"(Python and packages as Azure's), used in place of version {match['version']}."
        )
    return spec
