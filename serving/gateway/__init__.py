"""The scoring gateway: the one data-plane entry in front of every online endpoint's replicas.

`python -m serving.gateway` serves `POST /endpoints/{name}/score` and friends from a route table that the
control plane publishes (see docs/route-table.md and docs/gateway.md). No Django, no control-plane code.
"""
