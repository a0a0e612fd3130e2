"""Lets scripts written for Azure ML import `rawhttp` and `AMLResponse` from Azure's module paths.

When Azure's own packages are not installed, `install()` registers small modules under
`azureml.contrib.services.aml_request` / `.aml_response` and
`azureml_inference_server_http.api.aml_request` / `.aml_response` that hand out Studio's equivalents. When
they are installed, nothing is replaced, and `wants_raw_request` also recognises Azure's own marker.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Callable

from serving.messages import AMLResponse, ScoreRequest
from serving.schema import RAW_ATTR, rawhttp

_PACKAGES = ("azureml.contrib.services", "azureml_inference_server_http.api")


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _register(name: str) -> types.ModuleType:
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__path__ = []  # a package, so submodules can be registered beneath it
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(_register(parent), child, module)
    return module


def install() -> None:
    """Register the compatibility modules for whichever of Azure's packages is missing."""
    for package in _PACKAGES:
        if _available(package):
            continue
        request_module = _register(f"{package}.aml_request")
        request_module.rawhttp = rawhttp
        request_module.AMLRequest = ScoreRequest
        response_module = _register(f"{package}.aml_response")
        response_module.AMLResponse = AMLResponse


def wants_raw_request(run: Callable) -> bool:
    """Whether `run` was marked with `rawhttp`: Studio's attribute or Azure's module-level flag."""
    if getattr(run, RAW_ATTR, False):
        return True
    for package in _PACKAGES:
        module = sys.modules.get(f"{package}.aml_request")
        if module is not None and getattr(module, "_rawHttpRequested", False):
            return True
    return False
