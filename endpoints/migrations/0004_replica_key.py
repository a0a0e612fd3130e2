from django.db import migrations, models

import endpoints.models


def give_each_deployment_a_key(apps, schema_editor):
    """A key of its own for every existing deployment (a column default would give them all one)."""
    OnlineDeployment = apps.get_model("endpoints", "OnlineDeployment")
    for deployment in OnlineDeployment.objects.filter(replica_key="").only("pk"):
        OnlineDeployment.objects.filter(pk=deployment.pk).update(
            replica_key=endpoints.models.new_replica_key()
        )


class Migration(migrations.Migration):
    dependencies = [("endpoints", "0003_token_binding")]

    operations = [
        migrations.AddField(
            model_name="onlinedeployment",
            name="replica_key",
            field=models.TextField(default="", editable=False),
            preserve_default=False,
        ),
        migrations.RunPython(give_each_deployment_a_key, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="onlinedeployment",
            name="replica_key",
            field=models.TextField(default=endpoints.models.new_replica_key, editable=False),
        ),
    ]
