"""A script whose init() takes a while, or fails when asked to by the environment."""

import os
import time


def init():
    time.sleep(float(os.environ.get("TEST_INIT_SLEEP", "0")))
    if os.environ.get("TEST_INIT_FAIL"):
        raise RuntimeError("cannot find the model file")


def run(raw_data):
    return "ok"
