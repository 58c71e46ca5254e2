output "kafka_bootstrap" {
  description = "Kafka bootstrap address (host:port) for bootstrap.servers: the internal load balancer; clients then reach each broker at its own private IP."
  value       = "${aws_lb.this.dns_name}:${local.kafka_port}"
}

output "grpc_bootstrap" {
  description = "gRPC bootstrap URL for the strata CLI and the Rust client (--broker, STRATA_BROKER): https:// when tls_secret_arn is set (clients then pass --tls-ca, or STRATA_TLS_CA, with the secret's CA)."
  value       = "${local.grpc_scheme}://${aws_lb.this.dns_name}:${local.grpc_port}"
}

output "auth_enabled" {
  description = "Whether clients must authenticate (SASL on Kafka, --user/--password-file or a client certificate on gRPC) and ACLs decide."
  value       = var.auth_enabled
}

output "tls_enabled" {
  description = "Whether the listeners serve TLS (gRPC https://, Kafka SSL or SASL_SSL, https /readyz and /metrics), from tls_secret_arn."
  value       = local.tls_enabled
}

output "create_admin_command" {
  description = "Creates the first super user, writing the bucket directly: run it once, after apply, where the `strata` binary and AWS credentials allowed to write the bucket prefix are (object_store reads AWS_ACCESS_KEY_ID and friends, not profiles: `eval \"$(aws configure export-credentials --format env)\"` first), with the password in the file named. Null when auth_enabled is false or super_users is empty."
  value       = var.auth_enabled && length(var.super_users) > 0 ? "AWS_REGION=${local.region} strata user add ${local.first_admin} --password-file ${local.first_admin}.pw --store ${local.store_url}" : null
}

output "bucket" {
  description = "Name of the bucket that holds the cluster's data."
  value       = aws_s3_bucket.this.bucket
}

output "store_url" {
  description = "The brokers' store URL (s3://bucket/prefix), for `strata serve --store` or `strata bench` from elsewhere."
  value       = local.store_url
}

output "autoscaling_group_name" {
  description = "Name of the brokers' autoscaling group."
  value       = aws_autoscaling_group.broker.name
}

output "broker_role_arn" {
  description = "ARN of the brokers' IAM role (grant it more, e.g. for SSM Session Manager, outside the module)."
  value       = aws_iam_role.broker.arn
}

output "broker_security_group_id" {
  description = "Security group of the brokers (add rules for more clients outside the module)."
  value       = aws_security_group.broker.id
}

output "log_group_name" {
  description = "CloudWatch log group of the brokers' logs (one stream per instance)."
  value       = aws_cloudwatch_log_group.broker.name
}
