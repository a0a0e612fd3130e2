#!/usr/bin/env bash
# Azure ML's safe rollout (blue/green) script, with `az ml` replaced by `studio`. It passes the Azure
# workspace flags (-g, -w) as Azure's scripts do; Studio accepts them, warns once and ignores them.
# Run it from docs/samples.
set -e

RESOURCE_GROUP=my-resource-group
WORKSPACE=my-workspace
export ENDPOINT_NAME="endpt-sr-$RANDOM"

# <create_endpoint>
studio online-endpoint create -g $RESOURCE_GROUP -w $WORKSPACE --name $ENDPOINT_NAME -f online/sample/endpoint.yml
# </create_endpoint>

# <create_blue>
studio online-deployment create -g $RESOURCE_GROUP -w $WORKSPACE --name blue --endpoint $ENDPOINT_NAME -f online/sample/blue-deployment.yml --all-traffic
# </create_blue>

# <test_blue>
studio online-endpoint invoke -g $RESOURCE_GROUP -w $WORKSPACE --name $ENDPOINT_NAME --request-file online/sample/sample-request.json
# </test_blue>

# <create_green> the same model under a new name, created without waiting; the script polls its state
studio online-deployment create -g $RESOURCE_GROUP -w $WORKSPACE --name green --endpoint $ENDPOINT_NAME -f online/sample/blue-deployment.yml --set name=green --set 'tags={"color": "green"}' --no-wait
# </create_green>

deploy_status=$(studio online-deployment show -g $RESOURCE_GROUP -w $WORKSPACE -n green -e $ENDPOINT_NAME --query provisioning_state -o tsv)
while [[ $deploy_status == "Creating" || $deploy_status == "Updating" || $deploy_status == "Scaling" ]]
do
  sleep 1
  deploy_status=$(studio online-deployment show -g $RESOURCE_GROUP -w $WORKSPACE -n green -e $ENDPOINT_NAME --query provisioning_state -o tsv)
done
echo "green: $deploy_status"
if [[ $deploy_status != "Succeeded" ]]
then
  echo "Deployment of green failed"
  studio online-deployment get-logs -n green -e $ENDPOINT_NAME
  exit 1
fi

# <test_green>
studio online-endpoint invoke --name $ENDPOINT_NAME --deployment-name green --request-file online/sample/sample-request.json
# </test_green>

# <green_mirror_traffic>
studio online-endpoint update --name $ENDPOINT_NAME --mirror-traffic "green=10"
# </green_mirror_traffic>

# <reset_mirror_traffic>
studio online-endpoint update --name $ENDPOINT_NAME --mirror-traffic "green=0"
# </reset_mirror_traffic>

# <split_traffic>
studio online-endpoint update --name $ENDPOINT_NAME --traffic "blue=90 green=10"
# </split_traffic>

green_traffic=$(studio online-endpoint show -n $ENDPOINT_NAME --query traffic.green -o tsv)
echo "green traffic: $green_traffic"
if [[ $green_traffic != "10" ]]
then
  echo "The traffic split was not applied"
  exit 1
fi

# <allow_all_green>
studio online-endpoint update --name $ENDPOINT_NAME --traffic "blue=0 green=100"
# </allow_all_green>

# <tag_endpoint>
studio online-endpoint update --name $ENDPOINT_NAME --set tags.rollout=done
# </tag_endpoint>

# <remove_blue>
studio online-deployment delete --name blue --endpoint $ENDPOINT_NAME --yes
# </remove_blue>

remaining=$(studio online-deployment list -e $ENDPOINT_NAME --query "[].name" -o tsv)
echo "deployments: $remaining"
if [[ $remaining != "green" ]]
then
  echo "blue was not deleted"
  exit 1
fi

# <delete_endpoint>
studio online-endpoint delete --name $ENDPOINT_NAME --yes --no-wait
# </delete_endpoint>
