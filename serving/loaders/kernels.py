"""The arithmetic of a few fitted scikit-learn estimators, without scikit-learn's per-call checks.

On one row, `StandardScaler.transform` and a linear model's `predict` spend almost all their time in
input validation (namespace and dataframe detection, dtype and shape checks) and microseconds in the
arithmetic. A kernel here does the very numpy operations scikit-learn does after validating, on the
very arrays it would have validated, so its answers are the same bit for bit. It takes only what
scikit-learn would have passed through unchanged or converted in one known way: a 2-D float64, float32
or integer numpy array of the fitted width with at least one row, holding no value scikit-learn would
refuse. Anything else goes to the estimator's own method, which converts or refuses it as always.

A kernel is chosen once, at load, and only when it is provably the estimator's own formula: the class
is one of scikit-learn's own whose method is exactly the one the kernel restates (not overridden
anywhere), and the kernel answers a probe of random rows exactly as the method does. An estimator that
knows column names keeps its own method (it warns when given an array, and the kernel would not):
Studio hands arrays to twins without names (serving/loaders/sklearn.py). A scaler with `copy=False`
keeps its own too, since it changes its input in place.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

PROBE_ROWS = 7
_FLOATS = (np.dtype(np.float64), np.dtype(np.float32))


def _plain(matrix: Any, width: int) -> bool:
    """Whether `matrix` is an array scikit-learn's checks pass through as it is (numeric dtype kept)."""
    return (
        type(matrix) is np.ndarray
        and matrix.ndim == 2
        and matrix.shape[0] > 0
        and matrix.shape[1] == width
        and (matrix.dtype in _FLOATS or matrix.dtype.kind in "iu")
    )


def _scaler(estimator: Any) -> Callable[[Any], Any]:
    """StandardScaler.transform: a float copy, minus the mean, over the scale (each cast to its dtype)."""
    mean = estimator.mean_ if estimator.with_mean else None
    scale = estimator.scale_ if estimator.with_std else None
    width = estimator.n_features_in_
    cast = {
        dtype: (None if mean is None else mean.astype(dtype), None if scale is None else scale.astype(dtype))
        for dtype in _FLOATS
    }
    original = estimator.transform

    def transform(matrix: Any) -> Any:
        # Integers become float64 as scikit-learn converts them; NaN passes, infinity is refused by it.
        if not _plain(matrix, width) or np.isinf(matrix).any():
            return original(matrix)
        dtype = matrix.dtype if matrix.dtype in _FLOATS else np.dtype(np.float64)
        centre, spread = cast[dtype]
        # The float copy minus the mean, made in one step: numpy casts integers to float64 first as well.
        out = np.array(matrix, dtype=dtype) if centre is None else np.subtract(matrix, centre, dtype=dtype)
        if spread is not None:
            out /= spread
        return out

    return transform


def _scores(estimator: Any) -> Callable[[Any], Any]:
    """The scores `X @ coef_(.T) + intercept_` of an array the estimator's own checks would pass as it is
    and find finite; None for any other input, which goes to the estimator's own predict."""
    coef = estimator.coef_
    coef_t = coef.T if coef.ndim == 2 else coef
    intercept = estimator.intercept_
    width = coef.shape[-1]

    def scores(matrix: Any) -> Any:
        if not _plain(matrix, width) or not np.isfinite(matrix).all():
            return None
        return matrix @ coef_t + intercept

    return scores


def _regressor(estimator: Any) -> Callable[[Any], Any]:
    """LinearModel.predict: the scores themselves."""
    scores_of, original = _scores(estimator), estimator.predict

    def predict(matrix: Any) -> Any:
        scores = scores_of(matrix)
        return original(matrix) if scores is None else scores

    return predict


def _classifier(estimator: Any) -> Callable[[Any], Any]:
    """LinearClassifierMixin.predict: the class of the positive score, or of the highest one."""
    scores_of, original, classes = _scores(estimator), estimator.predict, estimator.classes_

    def predict(matrix: Any) -> Any:
        scores = scores_of(matrix)
        if scores is None:
            return original(matrix)
        if scores.ndim > 1 and scores.shape[1] == 1:
            scores = scores.reshape(-1)
        indices = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return classes.take(indices, axis=0)

    return predict


def _restated(estimator: Any, method: str) -> Callable[[Any], Callable[[Any], Any]] | None:
    """The kernel maker for `estimator`'s `method`, when that method is exactly the formula it restates."""
    # Private names, which other scikit-learn versions (a deployment's own environment) may not have.
    try:
        from sklearn.linear_model import _base
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        return None
    linear_classifier = getattr(_base, "LinearClassifierMixin", None)
    linear_model = getattr(_base, "LinearModel", None)
    if linear_classifier is None or linear_model is None:
        return None
    # MultiOutputLinearModel.predict, where there is one, is LinearModel.predict under its own docstring.
    predicts = (
        linear_model.predict,
        getattr(getattr(_base, "MultiOutputLinearModel", None), "predict", None),
    )
    kind = type(estimator)
    if not kind.__module__.startswith("sklearn."):
        return None
    if kind is StandardScaler and method == "transform":
        return _scaler if estimator.copy else None  # copy=False changes its input in place
    if method != "predict" or getattr(estimator, "coef_", None) is None:
        return None
    if (
        isinstance(estimator, linear_classifier)
        and kind.predict is linear_classifier.predict
        and kind.decision_function is linear_classifier.decision_function
    ):
        return _classifier
    if (
        isinstance(estimator, linear_model)
        and not isinstance(estimator, linear_classifier)
        and kind.predict in predicts
        and kind._decision_function is linear_model._decision_function
    ):
        return _regressor
    return None


def _probe(estimator: Any) -> np.ndarray:
    """Random rows of the fitted width, around the fitted scale where the estimator knows it."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(PROBE_ROWS, estimator.n_features_in_))
    centre = getattr(estimator, "mean_", None)
    spread = getattr(estimator, "scale_", None)
    if centre is not None and spread is not None:
        rows = rows * spread + centre
    return rows


def _same(a: Any, b: Any) -> bool:
    return (
        type(a) is type(b) is np.ndarray
        and a.dtype == b.dtype
        and a.shape == b.shape
        and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    )


def fast(estimator: Any, method: str) -> Callable[[Any], Any]:
    """`estimator`'s `method`, or a kernel that answers exactly as it does on every array it takes."""
    original = getattr(estimator, method)
    if getattr(estimator, "feature_names_in_", None) is not None:
        return original  # its own method warns that an array has no column names: Studio's twins have none
    try:
        maker = _restated(estimator, method)
        if maker is None or getattr(estimator, "n_features_in_", None) is None:
            return original
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kernel = maker(estimator)
            probe = _probe(estimator)
            checks = (probe, probe[:1], probe.astype(np.float32), np.rint(probe).astype(np.int64))
            exact = all(_same(kernel(rows.copy()), original(rows.copy())) for rows in checks)
    except Exception:  # another scikit-learn, or not what its class promises: its own method it is
        return original
    return kernel if exact else original


# What a Pipeline's method does: each step's transform in turn, then the last step's method.
_PIPELINE_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform")


def chain(estimators: list[Any], method: str) -> Callable[[Any], Any]:
    """A function applying the transforms of `estimators` in turn, then `method` of the last one, each
    through its kernel where it has one."""
    transforms = [fast(estimator, "transform") for estimator in estimators[:-1]]
    final = fast(estimators[-1], method)

    def call(matrix: Any) -> Any:
        for transform in transforms:
            matrix = transform(matrix)
        return final(matrix)

    return call


def fast_call(estimator: Any, method: str) -> Callable[[Any], Any]:
    """`estimator`'s `method` with kernels where they are exact: a plain Pipeline is called as it calls
    its steps (transforms, then the last step's method), each step through `fast`."""
    from sklearn.pipeline import Pipeline

    if type(estimator) is not Pipeline or method not in _PIPELINE_METHODS:
        return fast(estimator, method)
    last = estimator.steps[-1][1]
    if last is None or last == "passthrough" or not hasattr(last, method):
        return getattr(estimator, method)
    steps = [step for _, step in estimator.steps[:-1] if step is not None and step != "passthrough"]
    if not all(hasattr(step, "transform") for step in steps):
        return getattr(estimator, method)
    return chain([*steps, last], method)
