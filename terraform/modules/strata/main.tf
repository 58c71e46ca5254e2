# Strata on AWS: a bucket that holds every byte, and an autoscaling group of
# stateless brokers behind an internal network load balancer used for
# bootstrap only (each broker advertises its own private IP, and clients
# talk to the owner of a partition directly).
#
# Files: bucket.tf (S3), iam.tf (the brokers' role), network.tf (security
# groups, load balancer, S3 endpoint), brokers.tf (launch template,
# autoscaling group, lifecycle hook, scaling policies, log group),
# templates/user_data.sh.tftpl (what runs on each instance).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  # Ports of a broker (the defaults of broker/src/config.rs, on all
  # interfaces).
  kafka_port = 9092
  grpc_port  = 50051
  http_port  = 9464

  vpc_cidr     = data.aws_vpc.this.cidr_block
  client_cidrs = length(var.client_cidr_blocks) > 0 ? var.client_cidr_blocks : [local.vpc_cidr]

  bucket_name = coalesce(var.bucket_name, "${var.name}-${local.account_id}-${local.region}")
  # Built from the name rather than read from the bucket resource, so that
  # the policies are known at plan time (and checked by the tests).
  bucket_arn = "arn:${local.partition}:s3:::${local.bucket_name}"
  store_url  = "s3://${local.bucket_name}/${var.bucket_prefix}"

  # The group's name is fixed here (not taken from the resource) because the
  # user data and the IAM policy need it and the group needs both.
  asg_name            = "${var.name}-brokers"
  asg_arn             = "arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.asg_name}"
  lifecycle_hook_name = "${var.name}-drain"

  log_group_name         = "/strata/${var.name}/brokers"
  metrics_log_group_name = "/strata/${var.name}/prometheus"
  log_group_arns = [
    "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.log_group_name}",
    "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:${local.metrics_log_group_name}",
  ]

  # systemd gives the broker 30 s beyond its own drain bound before SIGKILL;
  # the lifecycle hook gives the instance 120 s beyond that (polling,
  # stopping the CloudWatch agent, completing the action) before it
  # terminates the instance anyway.
  stop_timeout_seconds   = var.shutdown_timeout_seconds + 30
  hook_heartbeat_seconds = local.stop_timeout_seconds + 120

  # s3://bucket/key of the binary, when it comes from S3.
  binary_s3_arn = startswith(var.binary_url, "s3://") ? "arn:${local.partition}:s3:::${trimprefix(var.binary_url, "s3://")}" : null

  # TLS from the Secrets Manager secret: every listener, the advertised
  # gRPC URL, the health check and the metrics scrape switch to https.
  tls_enabled = var.tls_secret_arn != null
  grpc_scheme = local.tls_enabled ? "https" : "http"
  # The secret is read in its own region (the ARN's fourth field).
  tls_secret_region = local.tls_enabled ? split(":", var.tls_secret_arn)[3] : local.region

  # `strata user add` for the first super user: it writes the bucket
  # directly (the operator runs it once, with credentials for the bucket).
  first_admin = length(var.super_users) > 0 ? var.super_users[0] : "admin"

  ami_id = var.ami_id != null ? var.ami_id : data.aws_ssm_parameter.ami[0].insecure_value

  tags = merge({ "strata:cluster" = var.name }, var.tags)
}
