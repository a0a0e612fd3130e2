"""Azure ML's binary-payload sample shape: an image posted as multipart/form-data, read with PIL."""

import io
import os

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse
from PIL import Image


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if request.method != "POST":
        return AMLResponse(f"Unsupported verb: {request.method}", 400)
    if request.args.get("env"):
        names = ("AML_APP_ROOT", "AZUREML_ENTRY_SCRIPT", "AZUREML_MODEL_DIR", "WORKER_COUNT")
        return AMLResponse({name: os.environ.get(name) for name in names}, 200, json_str=True)
    images = request.files.getlist("image")
    if not images:
        return AMLResponse("Send one or more files named image.", 400)
    sizes = []
    for upload in images:
        image = Image.open(upload).convert("RGB")
        sizes.append({"filename": upload.filename, "size": list(image.size)})
    thumbnail = Image.open(images[0]).convert("RGB").resize((2, 2))
    out = io.BytesIO()
    thumbnail.save(out, format="PNG")
    return AMLResponse(
        {"images": sizes, "label": request.form.get("label"), "thumbnail_bytes": len(out.getvalue())},
        200,
        json_str=True,
    )
