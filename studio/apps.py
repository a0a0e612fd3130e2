from django.apps import AppConfig
from django.db.models.signals import post_migrate


class StudioConfig(AppConfig):
    name = "studio"
    verbose_name = "Team"

    def ready(self) -> None:
        # The Celery app is loaded with Django, not with the package, so the CLI starts fast.
        import studio.celery  # noqa: F401
        from studio.api import schema  # noqa: F401  (registers the OpenAPI auth scheme)
        from studio.roles import ensure_role_groups

        post_migrate.connect(ensure_role_groups, sender=self)
