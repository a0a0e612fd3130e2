#!/usr/bin/env bash
# Azure ML's "deploy a model to a managed online endpoint" script, with `az ml` replaced by `studio`.
# Run it from docs/samples (the folder holding online/ and azure/).
set -e

# <set_endpoint_name>
export ENDPOINT_NAME="endpt-moe-$RANDOM"
# </set_endpoint_name>

# <create_endpoint>
studio online-endpoint create --name $ENDPOINT_NAME -f online/sample/endpoint.yml
# </create_endpoint>

# <create_deployment>
studio online-deployment create --name blue --endpoint $ENDPOINT_NAME -f online/sample/blue-deployment.yml --all-traffic
# </create_deployment>

# <get_status>
studio online-endpoint show -n $ENDPOINT_NAME
# </get_status>

# check if create was successful
endpoint_status=`studio online-endpoint show --name $ENDPOINT_NAME --query "provisioning_state" -o tsv`
echo $endpoint_status
if [[ $endpoint_status == "Succeeded" ]]
then
  echo "Endpoint created successfully"
else
  echo "Endpoint creation failed"
  exit 1
fi

deploy_status=`studio online-deployment show --name blue --endpoint $ENDPOINT_NAME --query "provisioning_state" -o tsv`
echo $deploy_status
if [[ $deploy_status == "Succeeded" ]]
then
  echo "Deployment completed successfully"
else
  echo "Deployment failed"
  exit 1
fi

# <test_endpoint>
studio online-endpoint invoke --name $ENDPOINT_NAME --request-file online/sample/sample-request.json
# </test_endpoint>

# <test_endpoint_using_curl>
ENDPOINT_KEY=$(studio online-endpoint get-credentials -n $ENDPOINT_NAME -o tsv --query primaryKey)

# <test_endpoint_using_curl_get_scoring_uri>
SCORING_URI=$(studio online-endpoint show -n $ENDPOINT_NAME -o tsv --query scoring_uri)
# </test_endpoint_using_curl_get_scoring_uri>

curl --fail --request POST "$SCORING_URI" --header "Authorization: Bearer $ENDPOINT_KEY" --header 'Content-Type: application/json' --data @online/sample/sample-request.json
# </test_endpoint_using_curl>

# <get_logs>
studio online-deployment get-logs --name blue --endpoint $ENDPOINT_NAME
# </get_logs>

# <get_storage_logs>
studio online-deployment get-logs --name blue --endpoint $ENDPOINT_NAME --lines 50 --container storage-initializer
# </get_storage_logs>

# <scale_deployment>
studio online-deployment update --name blue --endpoint $ENDPOINT_NAME --set instance_count=2
# </scale_deployment>

instance_count=$(studio online-deployment show -n blue -e $ENDPOINT_NAME --query instance_count -o tsv)
if [[ $instance_count != "2" ]]
then
  echo "Scaling failed: $instance_count instances"
  exit 1
fi

# <delete_endpoint>
studio online-endpoint delete --name $ENDPOINT_NAME --yes --no-wait
# </delete_endpoint>
