# A Strata cluster in an existing VPC: three to nine brokers in private
# subnets, an internal load balancer for bootstrap, a bucket for the data.
#
# Clients must authenticate (SASL or --user/--password-file) and every
# listener serves TLS with the certificate in the Secrets Manager secret
# tls_secret_arn; ../../modules/strata/README.md has the copy-paste steps
# (certificate, secret, first administrator).
#
#   cp terraform.tfvars.example terraform.tfvars   # then fill it in
#   terraform init && terraform apply
#   terraform output                               # then run create_admin_command

terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = {
      "managed-by" = "terraform"
      "project"    = "strata"
    }
  }
}

module "strata" {
  source = "../../modules/strata"

  name       = var.name
  vpc_id     = var.vpc_id
  subnet_ids = var.subnet_ids

  binary_url    = var.binary_url
  binary_sha256 = var.binary_sha256
  architecture  = var.architecture
  instance_type = var.instance_type

  min_size = 3
  max_size = 9

  # Scale out when the brokers' CPU averages above 60% or, with the second
  # policy, when the mean produce rate per broker passes 32 MiB/s.
  cpu_target_percent              = 60
  produce_bytes_per_broker_target = 32 * 1024 * 1024

  # Authentication is on by default (auth_enabled); the super users
  # administer the others.
  super_users     = var.super_users
  tls_secret_arn  = var.tls_secret_arn
  tls_client_auth = var.tls_client_auth

  create_s3_endpoint = length(var.route_table_ids) > 0
  route_table_ids    = var.route_table_ids
}
