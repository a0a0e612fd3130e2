from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="ResourceMinute",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("endpoint", models.CharField(max_length=64)),
                ("deployment", models.CharField(max_length=64)),
                ("minute", models.DateTimeField()),
                (
                    "cpu_seconds",
                    models.FloatField(default=0.0, help_text="CPU time the replicas used while sampled"),
                ),
                (
                    "sampled_seconds",
                    models.FloatField(default=0.0, help_text="wall time the CPU samples cover"),
                ),
                (
                    "rss_bytes",
                    models.BigIntegerField(default=0, help_text="highest memory of the replicas together"),
                ),
                (
                    "replicas",
                    models.PositiveIntegerField(default=0, help_text="most replicas sampled at once"),
                ),
                ("readings", models.JSONField(default=dict)),
            ],
            options={
                "ordering": ["minute"],
                "indexes": [
                    models.Index(fields=["endpoint", "minute"], name="resourceminute_endpoint_minute")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("endpoint", "deployment", "minute"), name="resourceminute_unique_minute"
                    )
                ],
            },
        ),
    ]
