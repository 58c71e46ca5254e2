# Inputs of the Strata module. Only the network and the binary are required;
# everything else has a default that runs a small cluster of three brokers.

# ---------------------------------------------------------------- naming

variable "name" {
  description = "Name of the cluster: prefixes every resource (load balancer, target groups, autoscaling group, IAM role, log group). Lowercase letters, digits and hyphens, starting with a letter, at most 20 characters (load balancer and target group names are limited to 32)."
  type        = string
  default     = "strata"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name)) && !endswith(var.name, "-")
    error_message = "name must be 1 to 20 lowercase letters, digits or hyphens, start with a letter and not end with a hyphen."
  }
}

variable "tags" {
  description = "Tags added to every resource that takes tags."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- network

variable "vpc_id" {
  description = "VPC the brokers and the load balancer run in. Its primary CIDR block is the only source allowed on the admin/metrics port and, unless client_cidr_blocks says otherwise, on the client ports."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must be a VPC id like vpc-0123456789abcdef0."
  }
}

variable "subnet_ids" {
  description = "Private subnets, in at least two availability zones, for the brokers and the internal load balancer. Brokers need outbound HTTPS (a NAT gateway, or VPC endpoints) to reach S3, CloudWatch Logs, the Auto Scaling API and binary_url."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "subnet_ids must list at least two subnet ids (subnet-...), in different availability zones, so that the cluster survives the loss of one zone."
  }

  validation {
    condition     = length(distinct(var.subnet_ids)) == length(var.subnet_ids)
    error_message = "subnet_ids must not repeat a subnet."
  }
}

variable "client_cidr_blocks" {
  description = "IPv4 CIDR blocks allowed to reach the Kafka and gRPC ports (on the load balancer and on each broker, since clients talk to the broker that owns a partition directly after bootstrap). Empty: the VPC's primary CIDR block."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.client_cidr_blocks : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "client_cidr_blocks must be IPv4 CIDR blocks (like 10.0.0.0/16), and not 0.0.0.0/0: list the networks your clients are in (the brokers are private, behind an internal load balancer)."
  }
}

variable "create_s3_endpoint" {
  description = "Create an S3 gateway VPC endpoint on route_table_ids, so that bucket traffic skips the NAT gateway (no data processing charge). Leave false when the VPC already has one."
  type        = bool
  default     = false
}

variable "route_table_ids" {
  description = "Route tables of subnet_ids, for the S3 gateway endpoint (create_s3_endpoint)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.route_table_ids : can(regex("^rtb-[0-9a-f]{8,17}$", r))])
    error_message = "route_table_ids must be route table ids (rtb-...)."
  }

  validation {
    condition     = !var.create_s3_endpoint || length(var.route_table_ids) > 0
    error_message = "create_s3_endpoint needs route_table_ids: the route tables of the brokers' subnets."
  }
}

variable "lb_deletion_protection" {
  description = "Turn on deletion protection of the load balancer (then `terraform destroy` needs it turned off first)."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------- bucket

variable "bucket_name" {
  description = "Name of the S3 bucket to create. Null: \"<name>-<account id>-<region>\"."
  type        = string
  default     = null

  validation {
    condition = var.bucket_name == null ? true : (
      can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) &&
      !can(regex("\\.\\.|^\\d+\\.\\d+\\.\\d+\\.\\d+$|^xn--|-s3alias$", var.bucket_name))
    )
    error_message = "bucket_name must be a valid S3 bucket name: 3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit."
  }
}

variable "bucket_prefix" {
  description = "Key prefix of the cluster in the bucket (the store is s3://<bucket>/<bucket_prefix>). The brokers' IAM policy covers this prefix only."
  type        = string
  default     = "strata"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$", var.bucket_prefix))
    error_message = "bucket_prefix must be one or more path segments of letters, digits, '_' or '-' separated by '/', without a leading or trailing '/'."
  }
}

variable "bucket_force_destroy" {
  description = "Let `terraform destroy` delete a bucket that still holds objects. The bucket is the cluster's only copy of its data: keep false outside trials."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "KMS key for the bucket's default encryption (SSE-KMS with an S3 bucket key) and for the log group. Null: SSE-S3 (AES-256, no KMS request charges) and the log group's default encryption. With a key, the brokers' role may use it (kms:Decrypt, kms:GenerateDataKey) and the key policy must let CloudWatch Logs use it too."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be the ARN of a KMS key (arn:aws:kms:<region>:<account>:key/<id>)."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Versioning is off (Strata's create-only writes and deletes are the history, and versions would keep deleted WAL objects billed); this is how long noncurrent versions live if versioning is ever turned on by hand."
  type        = number
  default     = 1

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number of days, at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which the bucket aborts an incomplete multipart upload (a broker that died mid-upload leaves its parts billed until then)."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && var.abort_incomplete_multipart_days <= 30 && floor(var.abort_incomplete_multipart_days) == var.abort_incomplete_multipart_days
    error_message = "abort_incomplete_multipart_days must be a whole number between 1 and 30."
  }
}

# ---------------------------------------------------------------- brokers

variable "binary_url" {
  description = "Where each instance downloads the `strata` binary (a single static or glibc Linux executable for the instances' architecture): an https:// URL, or an s3://bucket/key object (the brokers' role is then allowed to read exactly that object)."
  type        = string

  validation {
    condition     = can(regex("^(https://[^\\s'\"]+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\\s'\"]+)$", var.binary_url))
    error_message = "binary_url must be an https:// URL or an s3://bucket/key location, without spaces or quotes."
  }
}

variable "binary_sha256" {
  description = "SHA-256 of the binary (64 hex digits). When set, an instance whose download does not match refuses to start the broker."
  type        = string
  default     = null

  validation {
    condition     = var.binary_sha256 == null ? true : can(regex("^[0-9a-f]{64}$", var.binary_sha256))
    error_message = "binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "architecture" {
  description = "CPU architecture of the instances and of the default AMI (Amazon Linux 2023): arm64 (Graviton, cheaper per core) or x86_64. The binary at binary_url must match."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.architecture)
    error_message = "architecture must be arm64 or x86_64."
  }
}

variable "ami_id" {
  description = "AMI of the brokers. Null: the latest Amazon Linux 2023 for architecture (from its public SSM parameter). The user data needs bash, curl, systemd and dnf (for the CloudWatch agent and the AWS CLI)."
  type        = string
  default     = null

  validation {
    condition     = var.ami_id == null ? true : can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI id like ami-0123456789abcdef0."
  }
}

variable "instance_type" {
  description = "EC2 instance type of the brokers (matching architecture: m7g.large is arm64, m7i.large is x86_64)."
  type        = string
  default     = "m7g.large"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.instance_type))
    error_message = "instance_type must look like m7g.large."
  }
}

variable "root_volume_size" {
  description = "Size in GiB of each broker's root volume (gp3, encrypted), which also holds the hot tier's disk cache (hot_tier.disk_bytes, 1 GiB by default)."
  type        = number
  default     = 20

  validation {
    condition     = var.root_volume_size >= 8 && var.root_volume_size <= 16384 && floor(var.root_volume_size) == var.root_volume_size
    error_message = "root_volume_size must be a whole number of GiB between 8 and 16384."
  }
}

variable "detailed_monitoring" {
  description = "One-minute EC2 metrics (about $2 a month per instance): target tracking on CPU reacts in minutes instead of five."
  type        = bool
  default     = true
}

variable "min_size" {
  description = "Fewest brokers. Partitions are spread over the live brokers; one broker is a valid cluster, but three ride out the loss of a zone without a cold start."
  type        = number
  default     = 3

  validation {
    condition     = var.min_size >= 1 && floor(var.min_size) == var.min_size
    error_message = "min_size must be a whole number, at least 1."
  }
}

variable "max_size" {
  description = "Most brokers the autoscaling group may run."
  type        = number
  default     = 9

  validation {
    condition     = var.max_size >= var.min_size && var.max_size <= 1000 && floor(var.max_size) == var.max_size
    error_message = "max_size must be a whole number between min_size and 1000."
  }
}

variable "cpu_target_percent" {
  description = "Target tracking: the autoscaling group keeps the brokers' average CPU near this percentage."
  type        = number
  default     = 60

  validation {
    condition     = var.cpu_target_percent >= 10 && var.cpu_target_percent <= 90
    error_message = "cpu_target_percent must be between 10 and 90."
  }
}

variable "produce_bytes_per_broker_target" {
  description = "Optional second target-tracking policy: the average produce rate per broker, in bytes per second (the broker's strata_bytes_in_per_second gauge, published to CloudWatch by the CloudWatch agent scraping /metrics). Null: no such policy, CPU only. The group scales out when either policy asks and in only when both agree."
  type        = number
  default     = null

  validation {
    condition     = var.produce_bytes_per_broker_target == null ? true : var.produce_bytes_per_broker_target >= 1048576
    error_message = "produce_bytes_per_broker_target must be null or at least 1048576 (1 MiB/s)."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the broker metrics the CloudWatch agent publishes (strata_bytes_in_per_second, strata_bytes_out_per_second, strata_partitions_owned, strata_cpu_cores), with the dimension AutoScalingGroupName."
  type        = string
  default     = "Strata"

  validation {
    condition     = can(regex("^[A-Za-z0-9_./#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1 to 255 letters, digits or ._/#:- and must not start with AWS/."
  }
}

variable "shutdown_timeout_seconds" {
  description = "How long a stopping broker may drain (its partitions move to the others, tails are sealed) before it exits: the broker's shutdown_timeout. systemd waits 30 s more before SIGKILL, and the termination lifecycle hook waits 120 s more than that before terminating the instance anyway. Acknowledged records are safe either way; a longer bound lets more partitions move without a failover."
  type        = number
  default     = 120

  validation {
    condition     = var.shutdown_timeout_seconds >= 10 && var.shutdown_timeout_seconds <= 3600 && floor(var.shutdown_timeout_seconds) == var.shutdown_timeout_seconds
    error_message = "shutdown_timeout_seconds must be a whole number between 10 and 3600 (the lifecycle hook waits at most two hours)."
  }
}

variable "extra_config" {
  description = "More TOML added to each broker's /etc/strata/strata.toml after the module's top-level keys and before its [auth] and [tls] sections (keys as in broker/src/config.rs, e.g. \"[wal]\\nmin_interval = \\\"10ms\\\"\"). The module writes broker_id, data_dir, store, the listen and advertised addresses, shutdown_timeout, log_format and the whole [auth] and [tls] sections itself: do not repeat them (use auth_enabled, super_users, tls_secret_arn and tls_client_auth)."
  type        = string
  default     = ""
  nullable    = false

  validation {
    condition     = !can(regex("(?m)^\\s*(broker_id|store|data_dir|grpc_addr|http_addr|kafka_addr|advertised_addr|kafka_advertised_addr|shutdown_timeout|log_format)\\s*=", var.extra_config))
    error_message = "extra_config must not set the keys the module writes (broker_id, store, data_dir, the listen and advertised addresses, shutdown_timeout, log_format)."
  }

  # [auth], [auth.x], auth = {...} and auth.enabled = ...; the same for tls.
  # A second [auth] table would not parse, and TLS set here would not
  # switch the advertised address, the health check or the metrics scrape
  # to https.
  validation {
    condition     = !can(regex("(?m)^\\s*(\\[\\s*\"?(auth|tls)\"?\\s*[\\].]|\"?(auth|tls)\"?\\s*[=.])", var.extra_config))
    error_message = "extra_config must not contain an [auth] or [tls] section or auth.*/tls.* keys: the module writes them; set auth_enabled, super_users, tls_secret_arn and tls_client_auth instead."
  }
}

variable "log_retention_days" {
  description = "Retention of the brokers' CloudWatch log group, in days (one of the values CloudWatch Logs accepts)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

# ---------------------------------------------------------------- security

variable "auth_enabled" {
  description = "Require every client to authenticate and allow only what ACLs allow (the broker's auth.enabled): SASL PLAIN or SCRAM-SHA-256/512 on Kafka, --user/--password-file (or a client certificate, see tls_client_auth) on gRPC. Users and ACLs live in the bucket under <bucket_prefix>/security/; create the first administrator with the create_admin_command output before clients connect. Without tls_secret_arn the passwords cross the network in clear text (SASL_PLAINTEXT, HTTP basic on gRPC): set tls_secret_arn too. false leaves the listeners open to anyone in client_cidr_blocks."
  type        = bool
  default     = true
  nullable    = false
}

variable "super_users" {
  description = "Users allowed everything whatever the ACLs say (the broker's auth.super_users), e.g. the administrator that creates the other users and their ACLs. Names as `strata user add` takes them (1 to 128 letters, digits and . _ - @), without the User: prefix. The users themselves are created with `strata user add` (see the create_admin_command output); a name here grants nothing until that user exists. Empty: every right comes from ACLs (written with `strata acl add --store`)."
  type        = list(string)
  default     = ["admin"]
  nullable    = false

  validation {
    condition     = alltrue([for u in var.super_users : can(regex("^[A-Za-z0-9._@-]{1,128}$", u))])
    error_message = "super_users must be user names of 1 to 128 letters, digits, '.', '_', '-' or '@' (as `strata user add` accepts them), without spaces or the User: prefix."
  }

  validation {
    condition     = length(distinct(var.super_users)) == length(var.super_users)
    error_message = "super_users must not repeat a name."
  }
}

variable "tls_secret_arn" {
  description = "Full ARN of an AWS Secrets Manager secret whose value is a JSON object {\"cert\": PEM, \"key\": PEM, \"ca\": PEM}: the brokers' certificate chain and private key, and optionally the CA that signed it. Set: TLS on every listener (gRPC https://, Kafka SSL/SASL_SSL, the admin endpoint), brokers advertise https://<private IP>, the load balancer's health check uses HTTPS, and the brokers' role may read exactly this secret (secretsmanager:GetSecretValue); each instance reads it at boot, so the key never enters Terraform's state. The certificate must name every address clients use: each broker's private IP (IP SANs for the brokers' subnets) and the load balancer's DNS name (e.g. DNS:*.elb.<region>.amazonaws.com). With \"ca\", brokers verify each other against it; without it, against the system's roots. Encrypt the secret with the AWS managed key or with kms_key_arn. Null: no TLS (not recommended beyond a trial)."
  type        = string
  default     = null

  validation {
    condition     = var.tls_secret_arn == null ? true : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", var.tls_secret_arn))
    error_message = "tls_secret_arn must be the full ARN of a Secrets Manager secret, with the six-character suffix AWS adds to its name (arn:aws:secretsmanager:<region>:<account>:secret:<name>-AbC123; `aws secretsmanager describe-secret --secret-id <name> --query ARN`): the brokers' role is allowed exactly this ARN."
  }
}

variable "tls_client_auth" {
  description = "Ask clients for a certificate signed by the secret's \"ca\" (mTLS; the certificate's CN is the client's user). Null: no client certificates. \"requested\": a client may present one (it is verified and names the client); one that does not must authenticate with a password when auth_enabled, so no one gets in unauthenticated. \"required\" is refused: the load balancer's /readyz health check cannot present a certificate, so every broker would fail it and be replaced over and over. Needs tls_secret_arn, and a \"ca\" in the secret (an instance without one refuses to start the broker and says why in /var/log/strata-bootstrap.log)."
  type        = string
  default     = null

  validation {
    condition     = var.tls_client_auth == null ? true : contains(["required", "requested"], var.tls_client_auth)
    error_message = "tls_client_auth must be null (no client certificates) or \"requested\"."
  }

  validation {
    condition     = var.tls_client_auth != "required"
    error_message = "tls_client_auth = \"required\" would fail the load balancer's /readyz health check (it cannot present a client certificate), so every broker would be replaced in a loop: use \"requested\", which still verifies every certificate presented, and keep auth_enabled so clients without one must sign in with a password."
  }

  validation {
    condition     = var.tls_client_auth == null || var.tls_secret_arn != null
    error_message = "tls_client_auth needs tls_secret_arn: client certificates are checked against the \"ca\" of the TLS secret."
  }
}
