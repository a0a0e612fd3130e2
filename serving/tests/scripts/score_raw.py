"""A raw-request script written for Azure ML: rawhttp and AMLResponse from Azure's import paths."""

import json

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method == "GET":
        return AMLResponse({"hello": request.args.get("name", "world")}, 200, json_str=True)
    if request.files:
        upload = request.files["image"]
        body = {"filename": upload.filename, "size": len(upload.read()), "label": request.form.get("label")}
        return AMLResponse(
            json.dumps(body), 201, {"Content-Type": "application/json", "X-Studio-Test": "files"}
        )
    if request.headers.get("X-Teapot"):
        return AMLResponse("short and stout", 418)
    payload = request.get_json()
    return {"echo": payload, "content_type": request.headers.get("Content-Type")}
