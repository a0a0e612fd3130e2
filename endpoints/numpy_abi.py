"""Keeping an environment's compiled packages on the numpy their wheels were built for.

Wheels of scikit-learn, SciPy, pandas and the other compiled packages released before numpy 2 were built
against numpy 1's C ABI: installed beside numpy 2 they fail at import ("numpy.dtype size changed, may
indicate binary incompatibility"). A conda file that pins such a release got, from conda, a build linked
with numpy 1; pip and uv know nothing of that and take the newest numpy. So when an environment pins a
package to a release older than its first numpy-2 build and says nothing of numpy itself, `numpy<2` is
added, and the job says so. An environment that names numpy keeps its choice: the build's smoke test
(endpoints.environments) then tells whether the two fit, before any replica starts.
"""

from __future__ import annotations

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

# The first release of each package whose wheels work with numpy 2 (each project's release notes).
FIRST_BUILT_FOR_NUMPY_2 = {
    "scikit-learn": "1.4.2",
    "scipy": "1.13.0",
    "pandas": "2.2.2",
    "pyarrow": "16.0.0",
    "xgboost": "2.1.0",
    "lightgbm": "4.4.0",
    "torch": "2.3.0",
    "tensorflow": "2.18.0",
    "tensorflow-cpu": "2.18.0",
    "onnxruntime": "1.19.0",
    "matplotlib": "3.8.4",
    "statsmodels": "0.14.2",
    "numba": "0.60.0",
    "h5py": "3.11.0",
    "scikit-image": "0.23.2",
    "numexpr": "2.10.0",
    "bottleneck": "1.4.0",
    "shap": "0.46.0",
    "catboost": "1.2.5",
    "opencv-python": "4.10.0.84",
    "opencv-python-headless": "4.10.0.84",
}
NUMPY_1 = "numpy<2"


def _upper_bound(requirement: Requirement) -> Version | None:
    """The highest release `requirement` admits, when its specifier caps it (==, ===, <=, <)."""
    bound: Version | None = None
    for spec in requirement.specifier:
        text = spec.version
        try:
            if spec.operator in ("==", "===") and text.endswith(".*"):
                version = Version(text[:-2] + ".99999")
            elif spec.operator in ("==", "===", "<=", "<"):
                version = Version(text)
            else:
                continue
        except InvalidVersion:
            continue
        bound = version if bound is None else min(bound, version)
    return bound


def built_for_numpy_1(requirement: Requirement) -> bool:
    """Whether every release `requirement` admits predates the package's first numpy-2 build."""
    first = FIRST_BUILT_FOR_NUMPY_2.get(canonicalize_name(requirement.name))
    bound = _upper_bound(requirement)
    if first is None or bound is None:
        return False
    capped_below = any(spec.operator == "<" for spec in requirement.specifier)
    return bound <= Version(first) if capped_below else bound < Version(first)


def constrain(requirements: list[str]) -> tuple[list[str], str | None]:
    """`requirements` with `numpy<2` added when a pinned package needs it and numpy is not named; the
    warning that says why, or None."""
    parsed = []
    for line in requirements:
        try:
            parsed.append(Requirement(line))
        except InvalidRequirement:
            continue  # an option line (an allowed index): not a package
    if any(canonicalize_name(item.name) == "numpy" for item in parsed):
        return requirements, None
    old = [str(item) for item in parsed if built_for_numpy_1(item)]
    if not old:
        return requirements, None
    warning = (
        f"{', '.join(old)} predate{'s' if len(old) == 1 else ''} numpy 2 (its wheels are built for numpy 1's "
        f"ABI), so {NUMPY_1} is installed with {'it' if len(old) == 1 else 'them'}; name numpy in the "
        "environment to choose another."
    )
    return [*requirements, NUMPY_1], warning
