#!/usr/bin/env bash
# Registering models and environments as Azure ML's asset scripts do, with `az ml` replaced by
# `studio`. Run it from docs/samples.
set -e

# <create_model>
studio model create --name local-file-example --version 1 --path online/model-1/model/sklearn_regression_model.pkl
# </create_model>

# <create_model_set> the same file as version 3, with a tag, through az's generic --set
studio model create -n local-file-example --path online/model-1/model/sklearn_regression_model.pkl --set version=3 --set tags.stage=test
# </create_model_set>

latest=$(studio model show --name local-file-example --label latest --query version -o tsv)
echo "latest version: $latest"
if [[ $latest != "3" ]]
then
  echo "Registering version 3 failed"
  exit 1
fi

versions=$(studio model list --name local-file-example --query "[].version" -o tsv | sort | tr '\n' ' ')
echo "versions: $versions"
stage=$(studio model show -n local-file-example -v 3 --query tags.stage -o tsv)
if [[ $stage != "test" ]]
then
  echo "The tag was not set"
  exit 1
fi

# <update_model>
studio model update --name local-file-example --version 3 --set tags.stage=production --set description="Ridge regression"
# </update_model>

studio model show -n local-file-example -v 3 --query "{stage: tags.stage, description: description}" -o tsv

# <create_environment_from_image_plus_conda>
studio environment create --name docker-image-plus-conda-example --image mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04 --conda-file online/model-1/environment/conda.yaml
# </create_environment_from_image_plus_conda>

environment_version=$(studio environment show -n docker-image-plus-conda-example --label latest --query version -o tsv)
echo "environment version: $environment_version"
studio environment list --name docker-image-plus-conda-example -o yaml
