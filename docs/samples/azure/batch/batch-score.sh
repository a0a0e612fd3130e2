#!/usr/bin/env bash
# Azure ML's "deploy an MLflow model to a batch endpoint" script, with `az ml` replaced by `studio`.
# Run it from docs/samples (the folder holding azure/), after making the model (see README.md).
set -e

# <set_endpoint_name>
export ENDPOINT_NAME="linear-batch-$RANDOM"
# </set_endpoint_name>

echo "Creating batch endpoint $ENDPOINT_NAME"
# <create_endpoint>
studio batch-endpoint create --name $ENDPOINT_NAME -f azure/batch/endpoint.yml
# </create_endpoint>

echo "Showing details of the batch endpoint"
# <query_endpoint>
studio batch-endpoint show --name $ENDPOINT_NAME
# </query_endpoint>

echo "Creating batch deployment linear-mlflow for endpoint $ENDPOINT_NAME"
# <create_deployment>
studio batch-deployment create --file azure/batch/deployment.yml --endpoint-name $ENDPOINT_NAME --set-default
# </create_deployment>

DEFAULT_DEPLOYMENT=$(studio batch-endpoint show --name $ENDPOINT_NAME --query defaults.deployment_name -o tsv)
echo "default deployment: $DEFAULT_DEPLOYMENT"

echo "Invoking batch endpoint with local data"
# <start_batch_scoring_job>
JOB_NAME=$(studio batch-endpoint invoke --name $ENDPOINT_NAME --input azure/batch/data --input-type uri_folder --query name -o tsv)
# </start_batch_scoring_job>

echo "Showing job detail"
# <show_job>
studio job show -n $JOB_NAME
# </show_job>

echo "Stream job logs to console"
# <stream_job_logs_to_console>
studio job stream -n $JOB_NAME
# </stream_job_logs_to_console>

# <check_job_status>
STATUS=$(studio job show -n $JOB_NAME --query status -o tsv)
echo $STATUS
if [[ $STATUS == "Completed" ]]
then
  echo "Job completed"
elif [[ $STATUS ==  "Failed" ]]
then
  echo "Job failed"
  exit 1
else
  echo "Job status not failed or completed"
  exit 2
fi
# </check_job_status>

echo "Download scores to local path"
# <download_outputs>
studio job download --name $JOB_NAME --output-name score --download-path ./outputs-$JOB_NAME
# </download_outputs>
head -n 4 ./outputs-$JOB_NAME/named-outputs/score/predictions.csv

echo "Creating a deployment with a scoring script"
# <create_deployment_custom>
studio batch-deployment create --file azure/batch/deployment-custom.yml --endpoint-name $ENDPOINT_NAME
# </create_deployment_custom>

echo "Invoking the scoring script's deployment, with another output file name"
# <start_batch_scoring_job_custom>
JOB_NAME=$(studio batch-endpoint invoke --name $ENDPOINT_NAME --deployment-name linear-custom --input azure/batch/data --set output_file_name=file-totals.csv --query name -o tsv)
# </start_batch_scoring_job_custom>
studio job stream -n $JOB_NAME
studio job download --name $JOB_NAME --download-path ./outputs-$JOB_NAME
cat ./outputs-$JOB_NAME/named-outputs/score/file-totals.csv

echo "Making the scoring script's deployment the default"
# <update_default_deployment>
studio batch-endpoint update --name $ENDPOINT_NAME --set defaults.deployment_name=linear-custom
# </update_default_deployment>
echo "default deployment: $(studio batch-endpoint show --name $ENDPOINT_NAME --query defaults.deployment_name -o tsv)"

echo "Jobs of $ENDPOINT_NAME: $(studio batch-endpoint list-jobs --name $ENDPOINT_NAME --query 'length(@)' -o tsv)"

# <delete_endpoint>
studio batch-endpoint delete --name $ENDPOINT_NAME --yes
# </delete_endpoint>
