"""A script that sleeps, fails or echoes on request: for timeouts, crashes and concurrency."""

import json
import os
import time


def init():
    pass


def run(raw_data):
    request = json.loads(raw_data)
    if request.get("sleep"):
        time.sleep(request["sleep"])
    if request.get("fail"):
        raise RuntimeError("secret internal detail")
    return {"echo": request.get("echo"), "pid": os.getpid()}
