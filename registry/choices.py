from django.db import models


class ModelTypeChoices(models.TextChoices):
    CUSTOM = "custom_model", "Custom model"
    MLFLOW = "mlflow_model", "MLflow model"


class ContentKindChoices(models.TextChoices):
    FILE = "file", "Single file"
    FOLDER = "folder", "Folder"


class DataTypeChoices(models.TextChoices):
    """Azure ML's data asset types: one file, a folder, or a folder described by its `MLTable` file."""

    URI_FILE = "uri_file", "File (uri_file)"
    URI_FOLDER = "uri_folder", "Folder (uri_folder)"
    MLTABLE = "mltable", "Table (mltable)"
