output "kafka_bootstrap" {
  description = "bootstrap.servers for Kafka clients inside the VPC."
  value       = module.strata.kafka_bootstrap
}

output "grpc_bootstrap" {
  description = "STRATA_BROKER for the strata CLI inside the VPC (https:// with TLS: add STRATA_TLS_CA=ca.pem)."
  value       = module.strata.grpc_bootstrap
}

output "bucket" {
  description = "The bucket holding the cluster's data."
  value       = module.strata.bucket
}

output "auth_enabled" {
  description = "Whether clients must authenticate."
  value       = module.strata.auth_enabled
}

output "tls_enabled" {
  description = "Whether the listeners serve TLS."
  value       = module.strata.tls_enabled
}

output "create_admin_command" {
  description = "Run once after apply, with bucket credentials, to create the first super user (its password in the .pw file)."
  value       = module.strata.create_admin_command
}
