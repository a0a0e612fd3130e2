"""What a hostile model does when it is unpickled: imported by the pickle itself, in the converter.

Kept free of Django and pytest, so that the converter's process can import it as the pickle asks."""

import atexit
import os


def leave_link(estimator, target: str, name: str):
    """Return `estimator` as it was, and once the converter has written its output and is exiting, leave
    `out/model/<name>` (in the converter's folder) as a link to `target`."""
    folder = os.path.join(os.getcwd(), "out", "model")
    atexit.register(os.symlink, target, os.path.join(folder, name))
    return estimator


class Leaky:
    """Pickled as `leave_link(estimator, target, name)`: unpickling it yields the estimator."""

    def __init__(self, estimator, target: str, name: str):
        self.estimator, self.target, self.name = estimator, target, name

    def __reduce__(self):
        return leave_link, (self.estimator, self.target, self.name)


def record_cpus(estimator):
    """Return `estimator` as it was, and as the converter exits, write into its converted model
    (out/model/cpus.txt) how many CPUs it was allowed to run on."""

    def write() -> None:
        path = os.path.join(os.getcwd(), "out", "model", "cpus.txt")
        with open(path, "w") as out:
            out.write(str(len(os.sched_getaffinity(0))))

    atexit.register(write)
    return estimator


class CpuCounter:
    """Pickled as `record_cpus(estimator)`."""

    def __init__(self, estimator):
        self.estimator = estimator

    def __reduce__(self):
        return record_cpus, (self.estimator,)


def fill_memory(estimator, size: int):
    """Return `estimator` once `size` bytes were written (resident, not just reserved), as a model too
    large for a small instance type fills its memory while it loads."""
    filled = b"\x01" * size
    del filled
    return estimator


class MemoryHog:
    """Pickled as `fill_memory(estimator, size)`."""

    def __init__(self, estimator, size: int):
        self.estimator, self.size = estimator, size

    def __reduce__(self):
        return fill_memory, (self.estimator, self.size)
