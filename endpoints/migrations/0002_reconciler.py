import django.db.models.deletion
from django.db import migrations, models


SNAPSHOT_FIELDS = (
    "model_version_id",
    "code_digest",
    "scoring_script",
    "environment_version_id",
    "environment",
    "instance_type",
    "instance_count",
    "request_settings",
    "liveness_probe",
    "readiness_probe",
    "environment_variables",
    "data_collector",
)
SETTLED = ("Succeeded", "Failed", "Deleting")


def converged_as_they_are(apps, schema_editor):
    """Deployments the jobs had converged are recorded as observed, with what their replicas run; one
    a job was still changing is handed to the reconciler as a change to apply, with its open jobs."""
    OnlineDeployment = apps.get_model("endpoints", "OnlineDeployment")
    Job = apps.get_model("endpoints", "Job")
    for deployment in OnlineDeployment.objects.all():
        deployment.revision = deployment.generation
        deployment.observed_generation = deployment.generation
        if deployment.provisioning_state == "Succeeded":
            deployment.serving_revision = deployment.generation
            deployment.serving_spec = {name: getattr(deployment, name) for name in SNAPSHOT_FIELDS}
        elif deployment.provisioning_state not in SETTLED:
            deployment.generation += 1
        deployment.save()
        Job.objects.filter(deployment=deployment, state__in=["queued", "running"]).update(
            generation=deployment.generation
        )


class Migration(migrations.Migration):
    dependencies = [("endpoints", "0001_initial")]

    operations = [
        migrations.RemoveConstraint(model_name="replica", name="unique_replica_slot"),
        migrations.RenameField(model_name="replica", old_name="generation", new_name="revision"),
        migrations.AlterModelOptions(name="replica", options={"ordering": ["deployment", "revision", "index"]}),
        migrations.AddConstraint(
            model_name="replica",
            constraint=models.UniqueConstraint(
                fields=("deployment", "revision", "index"), name="unique_replica_slot"
            ),
        ),
        migrations.AddField(
            model_name="replica",
            name="drain_version",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="onlinedeployment", name="revision", field=models.PositiveIntegerField(default=1)
        ),
        migrations.AddField(
            model_name="onlinedeployment",
            name="observed_generation",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="onlinedeployment",
            name="serving_revision",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="onlinedeployment", name="serving_spec", field=models.JSONField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="onlinedeployment", name="pending_traffic", field=models.JSONField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="job", name="generation", field=models.PositiveIntegerField(blank=True, null=True)
        ),
        migrations.CreateModel(
            name="Lease",
            fields=[
                ("name", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("owner", models.CharField(blank=True, max_length=64)),
                ("acquired_at", models.DateTimeField(blank=True, null=True)),
                ("expires_at", models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name="GatewayAck",
            fields=[
                ("gateway_id", models.CharField(max_length=100, primary_key=True, serialize=False)),
                ("version", models.PositiveBigIntegerField()),
                ("seen_at", models.DateTimeField()),
            ],
        ),
        migrations.CreateModel(
            name="ReconcilePass",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("owner", models.CharField(max_length=64)),
                ("generation", models.PositiveIntegerField()),
                ("started_at", models.DateTimeField()),
                ("renewed_at", models.DateTimeField()),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("outcome", models.CharField(blank=True, max_length=200)),
                (
                    "deployment",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="passes",
                        to="endpoints.onlinedeployment",
                    ),
                ),
            ],
            options={"ordering": ["deployment", "started_at"]},
        ),
        migrations.RunPython(converged_as_they_are, migrations.RunPython.noop),
    ]
