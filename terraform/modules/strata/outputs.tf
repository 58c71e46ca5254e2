output "kafka_bootstrap" {
  description = "Kafka bootstrap address (host:port) for bootstrap.servers: the internal load balancer; clients then reach each broker at its own private IP."
  value       = "${aws_lb.this.dns_name}:${local.kafka_port}"
}

output "grpc_bootstrap" {
  description = "gRPC bootstrap URL for the strata CLI and the Rust client (--broker, STRATA_BROKER)."
  value       = "http://${aws_lb.this.dns_name}:${local.grpc_port}"
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
