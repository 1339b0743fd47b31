#!/bin/sh
# The bucket and the least-privilege MinIO users of docker-compose.yml, run once by `minio-setup`
# (the only service besides MinIO that holds the root credentials, as MC_HOST_local).
#   andon-worker: read/write/list on the Andon bucket (plant workers and their flow runs)
#   andon-mlflow: read/write/list on <bucket>/mlflow-artifacts/ only (the MLflow server)
# The gateway gets no object-store user at all. Idempotent: safe to run again (rotates the secrets).
set -eu
mc mb --ignore-existing "local/${BUCKET}"
cat > /tmp/worker.json <<JSON
{"Version": "2012-10-17", "Statement": [
 {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"], "Resource": ["arn:aws:s3:::${BUCKET}"]},
 {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"], "Resource": ["arn:aws:s3:::${BUCKET}/*"]}
]}
JSON
cat > /tmp/mlflow.json <<JSON
{"Version": "2012-10-17", "Statement": [
 {"Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": ["arn:aws:s3:::${BUCKET}"]},
 {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::${BUCKET}"],
  "Condition": {"StringLike": {"s3:prefix": ["mlflow-artifacts/*"]}}},
 {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
  "Resource": ["arn:aws:s3:::${BUCKET}/mlflow-artifacts/*"]}
]}
JSON
mc admin policy create local andon-worker /tmp/worker.json
mc admin policy create local andon-mlflow /tmp/mlflow.json
# the secrets come from this container's environment; mc takes them as arguments, visible only
# inside this short-lived container's own process namespace
mc admin user add local andon-worker "${WORKER_SECRET}"
mc admin user add local andon-mlflow "${MLFLOW_SECRET}"
mc admin policy attach local andon-worker --user andon-worker || true  # already attached on a rerun
mc admin policy attach local andon-mlflow --user andon-mlflow || true
echo "minio-setup: bucket ${BUCKET}, users andon-worker and andon-mlflow"
