from django.db import migrations, models


class Migration(migrations.Migration):
    """Tokens are bound to their endpoint's key generation (endpoints/credentials.py)."""

    dependencies = [
        ("endpoints", "0002_reconciler"),
    ]

    operations = [
        migrations.AddField(
            model_name="onlineendpoint",
            name="key_generation",
            field=models.PositiveIntegerField(default=1),
        ),
    ]
