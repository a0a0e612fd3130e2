"""One colour per deployment, the same wherever the deployment is drawn: the traffic card's sliders and
bar, and every monitoring chart.

A deployment's colour comes from its name (a stable hash, or the colour it is named after), and is the
same on every page drawn at the same moment. Two deployments of one endpoint never share a colour while
the palette has room: on a clash, the endpoint's current deployments take their colour in the order they
were created, then names that only telemetry remembers (deleted deployments) by name, each taking the
next free one.

So a colour is stable only while no clash is resolved differently: adding a deployment never moves an
older one's colour, but deleting one can. If deployments A and B prefer the same colour and A is older,
B draws in the next free colour; once A is deleted, B takes its preferred colour everywhere, charts of
past ranges included, and in those ranges A, now known only from telemetry, comes after the current
deployments and may draw in the colour B had. No colour is stored, so none survives a deletion; the
legend names every line.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from endpoints.models import OnlineDeployment
from monitoring.layout import UNROUTED

# Distinct on white and for the common kinds of colour blindness; none is the red or amber of the error
# charts, so a deployment is never mistaken for a status class.
PALETTE = (
    "#4e79a7",  # blue
    "#59a14f",  # green
    "#b07aa1",  # purple
    "#76b7b2",  # teal
    "#ff9da7",  # pink
    "#9c755f",  # brown
    "#bcbd22",  # olive
    "#2f4b7c",  # navy
)
UNROUTED_COLOUR = "#9ca3af"


# Azure's examples call deployments blue and green: a deployment named after a colour of the palette
# gets that colour.
_NAMED = {"blue": 0, "green": 1, "purple": 2, "teal": 3, "pink": 4, "brown": 5, "olive": 6, "navy": 7}


def _preferred(name: str) -> int:
    return _NAMED.get(name.lower(), zlib.crc32(name.encode()) % len(PALETTE))


def assign(names: Iterable[str]) -> dict[str, str]:
    """Colours for `names`, taken in the order given: each its preferred colour, or the next free one."""
    colours: dict[str, str] = {}
    taken: set[int] = set()
    for name in names:
        if name in colours:
            continue
        if name == UNROUTED:
            colours[name] = UNROUTED_COLOUR
            continue
        index = _preferred(name)
        if len(taken) < len(PALETTE):
            while index in taken:
                index = (index + 1) % len(PALETTE)
        taken.add(index)
        colours[name] = PALETTE[index]
    return colours


def deployment_colours(endpoint: str, others: Iterable[str] = ()) -> dict[str, str]:
    """The colour of each deployment of `endpoint`, and of `others` (names seen in its telemetry that are
    no deployment any more, and requests no deployment got)."""
    current = OnlineDeployment.objects.filter(endpoint__name=endpoint).order_by("pk")
    return assign([*current.values_list("name", flat=True), *sorted(others)])
