"""`manage.py rebuild_metrics`: recompute the per-minute metrics from the telemetry archive."""

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Min

from monitoring import rollup
from monitoring.layout import REQUESTS
from monitoring.models import ArchivedObject, MetricMinute
from studio.objectstore import store_from_url


class Command(BaseCommand):
    help = (
        "Recompute the per-minute metrics from the telemetry archive. Minutes older than the oldest "
        "archived hour are kept: their objects are gone (retention), so they cannot be recomputed."
    )

    def handle(self, *args, **options) -> None:
        store = store_from_url(settings.STUDIO_TELEMETRY_STORE)
        discovered = rollup.discover(store)
        self.stdout.write(f"{discovered} archive object(s) found that had no row.")
        with transaction.atomic():
            oldest = ArchivedObject.objects.filter(kind=REQUESTS).aggregate(oldest=Min("hour"))["oldest"]
            if oldest is None:
                self.stdout.write("The archive holds no request objects: nothing to rebuild.")
                return
            deleted, _ = MetricMinute.objects.filter(minute__gte=oldest).delete()
            # Clearing the claim token also voids any rollup in flight: its final compare-and-swap fails.
            ArchivedObject.objects.filter(kind=REQUESTS).update(
                rolled_up_at=None, claim_token="", claimed_at=None, events=0, duplicates=0, unreadable=0
            )
        self.stdout.write(f"Deleted {deleted} minute row(s) from {oldest:%Y-%m-%d %H:00} UTC on.")
        report = rollup.rollup_pending(store)
        self.stdout.write(
            self.style.SUCCESS(f"Rolled up {report.objects} object(s), {report.events} event(s).")
        )
