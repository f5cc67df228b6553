#!/usr/bin/env bash
# Least-privilege access for cluster/gcp.yaml (run once per project):
#   PROJECT_ID=... RUN_BUCKET=... SSH_CIDR=203.0.113.7/32 cluster/gcp-access.sh
# - a VPC `lmstack-vpc` with no default rules: SSH only from SSH_CIDR, all traffic between the nodes;
#   (the `default` network Ray uses otherwise allows SSH from 0.0.0.0/0);
# - service accounts: lmstack-worker may read/write the run bucket only; lmstack-head also starts and stops
#   instances (compute.instanceAdmin.v1) and acts as lmstack-worker (to start workers with it).
# Without them Ray gives the head a broad service account and workers the project's default one.
set -euo pipefail
: "${PROJECT_ID:?}" "${RUN_BUCKET:?}" "${SSH_CIDR:?}"
REGION=${REGION:-us-central1}
gcloud compute networks create lmstack-vpc --project "$PROJECT_ID" --subnet-mode custom
gcloud compute networks subnets create lmstack-subnet --project "$PROJECT_ID" --network lmstack-vpc \
  --region "$REGION" --range 10.40.0.0/20
gcloud compute firewall-rules create lmstack-ssh --project "$PROJECT_ID" --network lmstack-vpc \
  --allow tcp:22 --source-ranges "$SSH_CIDR" --target-tags lmstack
gcloud compute firewall-rules create lmstack-internal --project "$PROJECT_ID" --network lmstack-vpc \
  --allow tcp,udp,icmp --source-tags lmstack --target-tags lmstack
for sa in lmstack-head lmstack-worker; do
  gcloud iam service-accounts create "$sa" --project "$PROJECT_ID"
  gcloud storage buckets add-iam-policy-binding "gs://$RUN_BUCKET" \
    --member "serviceAccount:$sa@$PROJECT_ID.iam.gserviceaccount.com" --role roles/storage.objectAdmin
done
gcloud projects add-iam-policy-binding "$PROJECT_ID" \
  --member "serviceAccount:lmstack-head@$PROJECT_ID.iam.gserviceaccount.com" --role roles/compute.instanceAdmin.v1
gcloud iam service-accounts add-iam-policy-binding "lmstack-worker@$PROJECT_ID.iam.gserviceaccount.com" \
  --project "$PROJECT_ID" --member "serviceAccount:lmstack-head@$PROJECT_ID.iam.gserviceaccount.com" \
  --role roles/iam.serviceAccountUser
