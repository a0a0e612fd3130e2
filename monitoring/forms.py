"""The time range picker and deployment filter of the monitoring pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django import forms
from django.utils import timezone

from monitoring.queries import MAX_POINTS, points_needed

RANGES = {
    "hour": ("Last hour", timedelta(hours=1), "1m"),
    "day": ("Last day", timedelta(days=1), "5m"),
    "week": ("Last week", timedelta(days=7), "1h"),
}
CUSTOM = "custom"


@dataclass(frozen=True)
class TimeWindow:
    start: datetime
    end: datetime
    interval: str


def interval_for(start: datetime, end: datetime) -> str:
    """The finest interval that draws the range in at most a few hundred points."""
    for interval in ("1m", "5m", "1h", "1d"):
        if points_needed(start, end, interval) <= 500:
            return interval
    return "1d"


class TimeRangeForm(forms.Form):
    range = forms.ChoiceField(
        choices=[(key, label) for key, (label, _, _) in RANGES.items()] + [(CUSTOM, "Custom")],
        required=False,
    )
    start = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    end = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    deployment = forms.CharField(required=False, max_length=64)

    def clean(self) -> dict:
        data = super().clean()
        data["range"] = data.get("range") or "hour"
        if data["range"] == CUSTOM:
            if not data.get("start") or not data.get("end"):
                raise forms.ValidationError("A custom range needs a start and an end (UTC).")
            if data["start"] >= data["end"]:
                raise forms.ValidationError("The start of the range must be before its end.")
            if points_needed(data["start"], data["end"], "1d") > MAX_POINTS:
                raise forms.ValidationError("That range is too long: choose at most four years.")
        return data

    def window(self, now: datetime | None = None) -> TimeWindow:
        """The window the (valid) form asks for; the last hour when it is not valid."""
        now = now or timezone.now()
        data = self.cleaned_data if self.is_valid() else {"range": "hour"}
        if data["range"] == CUSTOM:
            return TimeWindow(data["start"], data["end"], interval_for(data["start"], data["end"]))
        _, span, interval = RANGES[data["range"]]
        return TimeWindow(now - span, now, interval)
