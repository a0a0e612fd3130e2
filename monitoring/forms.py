"""The time range picker, bucket size and deployment filter of the monitoring pages."""

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
# The bucket sizes a user may choose; a custom range of years gets days (interval_for) and no choice.
BUCKETS = {"1m": "1 min", "5m": "5 min", "15m": "15 min", "1h": "1 h"}
BUCKET_LABELS = {**BUCKETS, "1d": "1 day"}


@dataclass(frozen=True)
class TimeWindow:
    start: datetime
    end: datetime
    interval: str

    @property
    def bucket_label(self) -> str:
        return BUCKET_LABELS[self.interval]


def interval_for(start: datetime, end: datetime) -> str:
    """The finest interval that draws the range in at most a few hundred points."""
    for interval in ("1m", "5m", "15m", "1h", "1d"):
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
    # Blank: the range's own bucket size (RANGES, interval_for).
    interval = forms.ChoiceField(choices=[("", "auto"), *BUCKETS.items()], required=False)

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
            start, end = data["start"], data["end"]
        else:
            end = timezone.now()
            start = end - RANGES[data["range"]][1]
        interval = data.get("interval")
        if interval and points_needed(start, end, interval) > MAX_POINTS:
            fits = [text for key, text in BUCKETS.items() if points_needed(start, end, key) <= MAX_POINTS]
            raise forms.ValidationError(
                f"{BUCKETS[interval]} buckets make too many points for this range: choose "
                + (f"{fits[0]} or more." if fits else "a shorter range.")
            )
        return data

    def window(self, now: datetime | None = None) -> TimeWindow:
        """The window the (valid) form asks for; the last hour when it is not valid."""
        now = now or timezone.now()
        data = self.cleaned_data if self.is_valid() else {"range": "hour"}
        chosen = data.get("interval")
        if data["range"] == CUSTOM:
            interval = chosen or interval_for(data["start"], data["end"])
            return TimeWindow(data["start"], data["end"], interval)
        _, span, interval = RANGES[data["range"]]
        return TimeWindow(now - span, now, chosen or interval)
