output "kafka_bootstrap" {
  description = "bootstrap.servers for Kafka clients inside the VPC."
  value       = module.strata.kafka_bootstrap
}

output "grpc_bootstrap" {
  description = "STRATA_BROKER for the strata CLI inside the VPC."
  value       = module.strata.grpc_bootstrap
}

output "bucket" {
  description = "The bucket holding the cluster's data."
  value       = module.strata.bucket
}
