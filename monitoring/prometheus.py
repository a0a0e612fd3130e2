"""The control plane's Prometheus exposition, written by hand (the format is a few lines of text; no
dependency needed). Counters come from the retained minute rows, so they can drop when retention deletes
old minutes: Prometheus treats a drop as a counter reset, which `rate()` handles."""

from __future__ import annotations

from django.db.models import Count, Q

from monitoring.layout import REQUESTS
from monitoring.models import ArchivedObject
from monitoring.queries import lifetime_totals

_COUNTERS = (
    ("requests", "studio_endpoint_requests_total", "Scored requests answered by the gateways."),
    ("errors_4xx", "studio_endpoint_errors_4xx_total", "Requests answered with a 4xx status."),
    ("errors_5xx", "studio_endpoint_errors_5xx_total", "Requests answered with a 5xx status."),
    ("bytes_in", "studio_endpoint_request_bytes_total", "Request body bytes."),
    ("bytes_out", "studio_endpoint_response_bytes_total", "Response body bytes."),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition() -> str:
    """Every metric as Prometheus text format 0.0.4."""
    totals = lifetime_totals()
    lines: list[str] = []
    for field, name, help_text in _COUNTERS:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for row in totals:
            labels = (
                f'endpoint="{_label(row["endpoint"])}",deployment="{_label(row["deployment"])}",'
                f'mirrored="{"true" if row["mirrored"] else "false"}"'
            )
            lines.append(f"{name}{{{labels}}} {row[field]}")
    objects = ArchivedObject.objects.filter(kind=REQUESTS).aggregate(
        pending=Count("pk", filter=Q(rolled_up_at__isnull=True)), total=Count("pk")
    )
    lines += [
        "# HELP studio_telemetry_objects Archived request objects known to the control plane.",
        "# TYPE studio_telemetry_objects gauge",
        f'studio_telemetry_objects{{state="pending"}} {objects["pending"]}',
        f'studio_telemetry_objects{{state="rolled_up"}} {objects["total"] - objects["pending"]}',
    ]
    return "\n".join(lines) + "\n"
