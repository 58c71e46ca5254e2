variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "name" {
  description = "Name of the cluster (prefix of every resource)."
  type        = string
  default     = "strata"
}

variable "vpc_id" {
  description = "An existing VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of vpc_id in at least two availability zones, with outbound HTTPS (NAT gateway)."
  type        = list(string)
}

variable "route_table_ids" {
  description = "Route tables of subnet_ids: when given, an S3 gateway endpoint is created on them (bucket traffic skips the NAT gateway). Leave empty if the VPC already has one."
  type        = list(string)
  default     = []
}

variable "binary_url" {
  description = "https:// URL or s3://bucket/key of the strata binary for architecture (cargo build --release -p strata-broker --bin strata)."
  type        = string
}

variable "binary_sha256" {
  description = "SHA-256 of the binary (sha256sum target/release/strata); null skips the check."
  type        = string
  default     = null
}

variable "architecture" {
  description = "arm64 or x86_64: must match the binary and instance_type."
  type        = string
  default     = "arm64"
}

variable "instance_type" {
  description = "Broker instance type."
  type        = string
  default     = "m7g.large"
}

variable "tls_secret_arn" {
  description = "Full ARN of the Secrets Manager secret holding the brokers' TLS certificate: a JSON object {\"cert\": PEM chain, \"key\": PEM, \"ca\": PEM}, the certificate valid for the brokers' private IPs and the load balancer's name (../../modules/strata/README.md shows how to make one). Required on purpose: set it to null only for a throwaway trial, where passwords then cross the VPC in clear text."
  type        = string
}

variable "tls_client_auth" {
  description = "null, or \"requested\" to also accept client certificates signed by the secret's ca (mTLS; their CN is the user)."
  type        = string
  default     = null
}

variable "super_users" {
  description = "Users allowed everything; create the first with the create_admin_command output."
  type        = list(string)
  default     = ["admin"]
}
