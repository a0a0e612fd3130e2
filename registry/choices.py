from django.db import models


class ModelTypeChoices(models.TextChoices):
    CUSTOM = "custom_model", "Custom model"
    MLFLOW = "mlflow_model", "MLflow model"


class ContentKindChoices(models.TextChoices):
    FILE = "file", "Single file"
    FOLDER = "folder", "Folder"
