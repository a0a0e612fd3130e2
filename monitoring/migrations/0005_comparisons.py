# The tables of shadow comparison and replay (monitoring/comparison.py, monitoring/replay.py).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("endpoints", "0001_initial"),
        ("monitoring", "0004_alert_rules"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="GatewayWatermark",
            fields=[
                ("gateway_id", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("through", models.DateTimeField()),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.CreateModel(
            name="ComparisonSettings",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("rtol", models.FloatField(default=1e-06, help_text="relative tolerance of numbers")),
                ("atol", models.FloatField(default=0.0, help_text="absolute tolerance of numbers")),
                (
                    "sample_rate",
                    models.FloatField(default=1.0, help_text="share of mirrored requests compared, 0..1"),
                ),
                (
                    "max_body_bytes",
                    models.PositiveIntegerField(
                        default=65536, help_text="longer answers are compared by digest and not kept"
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "endpoint",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="comparison_settings",
                        to="endpoints.onlineendpoint",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="Replay",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("deployment", models.CharField(max_length=32)),
                ("start", models.DateTimeField()),
                ("end", models.DateTimeField()),
                (
                    "rate",
                    models.FloatField(
                        blank=True, help_text="requests per second at most; empty: no limit", null=True
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("queued", "queued"),
                            ("running", "running"),
                            ("succeeded", "succeeded"),
                            ("failed", "failed"),
                        ],
                        default="queued",
                        max_length=16,
                    ),
                ),
                (
                    "total",
                    models.PositiveIntegerField(default=0, help_text="collected requests in the window"),
                ),
                ("sent", models.PositiveIntegerField(default=0)),
                ("error", models.TextField(blank=True)),
                ("task_id", models.CharField(blank=True, max_length=64)),
                ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        null=True, on_delete=django.db.models.deletion.SET_NULL, to=settings.AUTH_USER_MODEL
                    ),
                ),
                (
                    "endpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="replays",
                        to="endpoints.onlineendpoint",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="ComparisonEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("endpoint", models.CharField(max_length=64)),
                (
                    "deployment",
                    models.CharField(help_text="the deployment compared (mirror or replay)", max_length=64),
                ),
                ("live_deployment", models.CharField(blank=True, max_length=64)),
                ("request_id", models.CharField(max_length=64)),
                (
                    "started_at",
                    models.DateTimeField(help_text="when the live request was sent to its deployment"),
                ),
                ("gateway", models.CharField(blank=True, max_length=100)),
                (
                    "dropped",
                    models.BooleanField(default=False, help_text="sampled for comparison but never compared"),
                ),
                ("live_status", models.PositiveIntegerField(blank=True, null=True)),
                ("shadow_status", models.PositiveIntegerField(blank=True, null=True)),
                ("live_ms", models.FloatField(blank=True, null=True)),
                ("shadow_ms", models.FloatField(blank=True, null=True)),
                ("agree", models.BooleanField(default=False)),
                ("reason", models.TextField(blank=True)),
                ("input", models.TextField(blank=True, null=True)),
                ("live_output", models.TextField(blank=True, null=True)),
                ("shadow_output", models.TextField(blank=True, null=True)),
                (
                    "replay",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="monitoring.replay",
                    ),
                ),
            ],
            options={
                "ordering": ["started_at", "id"],
                "indexes": [
                    models.Index(
                        fields=["endpoint", "deployment", "started_at"], name="comparisonevent_window"
                    )
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("replay__isnull", True)),
                        fields=("endpoint", "deployment", "request_id"),
                        name="comparisonevent_unique_mirrored",
                    ),
                    models.UniqueConstraint(
                        fields=("replay", "request_id"), name="comparisonevent_unique_replayed"
                    ),
                ],
            },
        ),
    ]
