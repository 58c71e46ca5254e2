# What must hold of every plan of the module: the brokers' IAM policy stays
# on the bucket prefix, the bucket is private and TLS-only, instances
# require IMDSv2, health checks ask /readyz, a terminating instance waits
# in a lifecycle hook while its broker drains, clients must authenticate by
# default, and TLS (when a secret is given) reaches every listener while the
# role may read that one secret.
#
#   terraform init -backend=false -plugin-dir=/opt/tf-plugins && terraform test

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
      arn        = "arn:aws:iam::123456789012:user/test"
      user_id    = "AIDATEST"
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition          = "aws"
      dns_suffix         = "amazonaws.com"
      reverse_dns_prefix = "com.amazonaws"
    }
  }
  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }
  mock_data "aws_vpc" {
    defaults = {
      cidr_block = "10.20.0.0/16"
    }
  }
  mock_data "aws_ssm_parameter" {
    defaults = {
      insecure_value = "ami-0123456789abcdef0"
      type           = "String"
    }
  }
  # Mocked ARNs must look like ARNs where the provider checks them.
  mock_resource "aws_iam_instance_profile" {
    defaults = {
      arn = "arn:aws:iam::123456789012:instance-profile/strata-broker"
    }
  }
  mock_resource "aws_lb_target_group" {
    defaults = {
      arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/strata/0123456789abcdef"
    }
  }
  mock_resource "aws_launch_template" {
    defaults = {
      id             = "lt-0123456789abcdef0"
      latest_version = 1
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn      = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/strata-nlb/0123456789abcdef"
      dns_name = "strata-nlb-0123456789abcdef.elb.eu-west-1.amazonaws.com"
    }
  }
}

variables {
  vpc_id     = "vpc-0123456789abcdef0"
  subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
  binary_url = "https://downloads.example.com/strata/0.1.0/aarch64-linux/strata"
}

run "iam_policy_is_scoped_to_the_bucket_prefix" {
  command = plan

  assert {
    condition     = aws_s3_bucket.this.bucket == "strata-123456789012-eu-west-1"
    error_message = "the default bucket name is <name>-<account>-<region>"
  }

  # Every statement that grants an S3 action names the bucket or objects
  # under the cluster's prefix: no "*" resource, no other bucket.
  assert {
    condition = alltrue(flatten([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : [
        for r in s.Resource :
        r == "arn:aws:s3:::strata-123456789012-eu-west-1" || r == "arn:aws:s3:::strata-123456789012-eu-west-1/strata/*"
      ] if anytrue([for a in s.Action : startswith(a, "s3:")])
    ]))
    error_message = "an S3 statement of the broker policy reaches beyond the bucket prefix"
  }

  assert {
    condition = alltrue(flatten([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : [for r in s.Resource : r != "*"]
    ]))
    error_message = "the broker policy has a \"*\" resource"
  }

  assert {
    condition = alltrue(flatten([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : [for a in s.Action : !strcontains(a, "*")]
    ]))
    error_message = "the broker policy has a wildcard action"
  }

  # Exactly the S3 actions the broker uses.
  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : [for a in s.Action : a if startswith(a, "s3:")]
      ])) == toset([
      "s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
    ])
    error_message = "the broker policy grants other S3 actions than List/Get/Put/Delete/AbortMultipartUpload"
  }

  # Listing is allowed on the bucket, but only under the prefix.
  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : s.Condition.StringLike["s3:prefix"]
      if contains(s.Action, "s3:ListBucket")
    ]) == ["strata", "strata/*"]
    error_message = "s3:ListBucket is not limited to the prefix by an s3:prefix condition"
  }

  # Object actions: the prefix's objects only.
  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : s.Resource
      if contains(s.Action, "s3:PutObject")
    ]) == ["arn:aws:s3:::strata-123456789012-eu-west-1/strata/*"]
    error_message = "object actions are not limited to arn:aws:s3:::<bucket>/<prefix>/*"
  }

  # The lifecycle action may be completed for this group only.
  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : s.Resource
      if contains(s.Action, "autoscaling:CompleteLifecycleAction")
    ]) == ["arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:autoScalingGroupName/strata-brokers"]
    error_message = "CompleteLifecycleAction is not limited to the brokers' group"
  }

  assert {
    condition     = jsondecode(aws_iam_role.broker.assume_role_policy).Statement[0].Principal.Service == "ec2.amazonaws.com"
    error_message = "the brokers' role is for EC2 instances"
  }
}

run "bucket_is_private_encrypted_and_tls_only" {
  command = plan

  assert {
    condition = (
      aws_s3_bucket_public_access_block.this.block_public_acls &&
      aws_s3_bucket_public_access_block.this.block_public_policy &&
      aws_s3_bucket_public_access_block.this.ignore_public_acls &&
      aws_s3_bucket_public_access_block.this.restrict_public_buckets
    )
    error_message = "public access must be blocked entirely"
  }

  assert {
    condition     = aws_s3_bucket_ownership_controls.this.rule[0].object_ownership == "BucketOwnerEnforced"
    error_message = "ACLs must be disabled (BucketOwnerEnforced)"
  }

  assert {
    condition     = one([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : one(r.apply_server_side_encryption_by_default).sse_algorithm]) == "AES256"
    error_message = "without a KMS key the bucket uses SSE-S3"
  }

  assert {
    condition     = one([for r in aws_s3_bucket_lifecycle_configuration.this.rule : r.abort_incomplete_multipart_upload[0].days_after_initiation if r.id == "abort-incomplete-multipart-uploads"]) == 1
    error_message = "incomplete multipart uploads must be aborted after a day"
  }

  assert {
    condition = anytrue([
      for s in jsondecode(aws_s3_bucket_policy.this.policy).Statement :
      s.Effect == "Deny" && s.Condition == { Bool = { "aws:SecureTransport" = "false" } } &&
      toset(s.Resource) == toset(["arn:aws:s3:::strata-123456789012-eu-west-1", "arn:aws:s3:::strata-123456789012-eu-west-1/*"])
    ])
    error_message = "the bucket policy must deny requests without TLS on the bucket and its objects"
  }

  assert {
    condition     = aws_s3_bucket.this.force_destroy == false
    error_message = "the bucket is the only copy of the data: no force_destroy by default"
  }
}

run "instances_require_imdsv2_and_run_the_broker" {
  command = plan

  assert {
    condition     = aws_launch_template.broker.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required"
  }

  assert {
    condition     = aws_launch_template.broker.metadata_options[0].http_put_response_hop_limit == 1
    error_message = "metadata tokens must not leave the instance (hop limit 1)"
  }

  assert {
    condition     = aws_launch_template.broker.image_id == "ami-0123456789abcdef0"
    error_message = "without ami_id the AMI comes from the Amazon Linux 2023 SSM parameter"
  }

  assert {
    condition     = aws_launch_template.broker.block_device_mappings[0].ebs[0].encrypted == "true"
    error_message = "the root volume must be encrypted"
  }

  assert {
    condition = alltrue([
      for needle in [
        "store = \"s3://strata-123456789012-eu-west-1/strata\"",
        "broker_id = \"auto\"",
        "advertised_addr = \"http://$PRIVATE_IP:50051\"",
        "kafka_advertised_addr = \"$PRIVATE_IP:9092\"",
        "grpc_addr = \"0.0.0.0:50051\"",
        "kafka_addr = \"0.0.0.0:9092\"",
        "http_addr = \"0.0.0.0:9464\"",
        "shutdown_timeout = \"120s\"",
        "ExecStart=/usr/local/bin/strata serve --config /etc/strata/strata.toml",
        "TimeoutStopSec=150",
        "X-aws-ec2-metadata-token",
        "https://downloads.example.com/strata/0.1.0/aarch64-linux/strata",
      ] : strcontains(base64decode(aws_launch_template.broker.user_data), needle)
    ])
    error_message = "the user data must configure and run the broker (store, a claimed broker id, advertised addresses from the private IP, listeners, drain bound)"
  }

  # The drain on termination: stop the broker (SIGTERM), then complete the
  # group's lifecycle action, in that order.
  assert {
    condition = (
      strcontains(base64decode(aws_launch_template.broker.user_data), "autoscaling/target-lifecycle-state") &&
      length(split("systemctl stop strata.service", base64decode(aws_launch_template.broker.user_data))) == 2 &&
      length(split("complete-lifecycle-action", split("systemctl stop strata.service", base64decode(aws_launch_template.broker.user_data))[1])) == 2 &&
      strcontains(base64decode(aws_launch_template.broker.user_data), "--lifecycle-hook-name \"$LIFECYCLE_HOOK_NAME\"") &&
      strcontains(base64decode(aws_launch_template.broker.user_data), "Environment=LIFECYCLE_HOOK_NAME=strata-drain")
    )
    error_message = "the user data must stop strata before it completes the lifecycle action"
  }
}

run "autoscaling_group_drains_on_termination" {
  command = plan

  assert {
    condition     = aws_autoscaling_lifecycle_hook.drain.lifecycle_transition == "autoscaling:EC2_INSTANCE_TERMINATING"
    error_message = "the lifecycle hook must hold terminating instances"
  }

  assert {
    condition     = aws_autoscaling_lifecycle_hook.drain.name == "strata-drain" && aws_autoscaling_lifecycle_hook.drain.autoscaling_group_name == "strata-brokers"
    error_message = "the hook's name and group must be the ones the user data completes"
  }

  assert {
    condition     = aws_autoscaling_lifecycle_hook.drain.heartbeat_timeout >= 120 + 30
    error_message = "the hook must wait longer than the broker may take to drain and systemd to stop it"
  }

  assert {
    condition     = aws_autoscaling_lifecycle_hook.drain.default_result == "CONTINUE"
    error_message = "a broker that never reports must not keep its instance forever"
  }

  assert {
    condition     = toset(aws_autoscaling_group.broker.vpc_zone_identifier) == toset(var.subnet_ids)
    error_message = "the group must span every subnet given"
  }

  assert {
    condition     = aws_autoscaling_group.broker.min_size == 3 && aws_autoscaling_group.broker.max_size == 9
    error_message = "three to nine brokers by default"
  }

  assert {
    condition     = aws_autoscaling_group.broker.health_check_type == "ELB"
    error_message = "a broker that stays not ready must be replaced"
  }

  assert {
    condition     = aws_autoscaling_policy.cpu.target_tracking_configuration[0].predefined_metric_specification[0].predefined_metric_type == "ASGAverageCPUUtilization"
    error_message = "target tracking on CPU"
  }

  assert {
    condition     = aws_autoscaling_policy.cpu.target_tracking_configuration[0].target_value == 60
    error_message = "CPU target is 60% by default"
  }

  assert {
    condition     = length(aws_autoscaling_policy.produce_bytes) == 0
    error_message = "no produce-bytes policy unless produce_bytes_per_broker_target is set"
  }
}

run "load_balancer_bootstraps_on_kafka_and_grpc_with_readyz" {
  command = plan

  assert {
    condition     = aws_lb.this.load_balancer_type == "network" && aws_lb.this.internal
    error_message = "an internal network load balancer (brokers advertise private addresses)"
  }

  assert {
    condition     = toset([for l in aws_lb_listener.broker : l.port]) == toset([9092, 50051]) && alltrue([for l in aws_lb_listener.broker : l.protocol == "TCP"])
    error_message = "TCP listeners on 9092 (Kafka) and 50051 (gRPC)"
  }

  assert {
    condition = alltrue([
      for tg in aws_lb_target_group.broker :
      tg.health_check[0].path == "/readyz" && tg.health_check[0].protocol == "HTTP" && tg.health_check[0].port == "9464" && tg.health_check[0].matcher == "200"
    ])
    error_message = "every target group must check HTTP /readyz on the admin port (503 while starting or draining)"
  }

  assert {
    condition     = aws_lb_target_group.broker["kafka"].port == 9092 && aws_lb_target_group.broker["grpc"].port == 50051
    error_message = "target groups forward to the brokers' Kafka and gRPC ports"
  }
}

run "security_groups_keep_the_admin_port_in_the_vpc" {
  command = plan

  assert {
    condition     = aws_vpc_security_group_ingress_rule.broker_admin.cidr_ipv4 == "10.20.0.0/16" && aws_vpc_security_group_ingress_rule.broker_admin.from_port == 9464
    error_message = "the admin/metrics port is open to the VPC CIDR only"
  }

  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.broker_clients : r.cidr_ipv4 == "10.20.0.0/16" && contains([9092, 50051], r.from_port)])
    error_message = "by default clients are the VPC, on the client ports only"
  }

  assert {
    condition     = alltrue([for r in aws_vpc_security_group_ingress_rule.lb_clients : r.from_port != 9464])
    error_message = "the load balancer does not expose the admin port"
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.broker_from_brokers) == 3
    error_message = "brokers reach each other on Kafka, gRPC and HTTP"
  }

  assert {
    condition     = aws_vpc_security_group_egress_rule.broker_https.from_port == 443 && aws_vpc_security_group_egress_rule.broker_https.to_port == 443
    error_message = "brokers leave the VPC on HTTPS only"
  }

  assert {
    condition     = length(aws_vpc_endpoint.s3) == 0
    error_message = "no S3 endpoint unless asked for"
  }
}

run "outputs_name_the_bootstrap_and_the_bucket" {
  command = apply

  assert {
    condition     = output.kafka_bootstrap == "strata-nlb-0123456789abcdef.elb.eu-west-1.amazonaws.com:9092"
    error_message = "kafka_bootstrap is the load balancer's name and the Kafka port"
  }

  assert {
    condition     = output.grpc_bootstrap == "http://strata-nlb-0123456789abcdef.elb.eu-west-1.amazonaws.com:50051"
    error_message = "grpc_bootstrap is an http:// URL on the gRPC port"
  }

  assert {
    condition     = output.bucket == "strata-123456789012-eu-west-1"
    error_message = "bucket is the bucket's name"
  }
}

run "optional_produce_policy_s3_binary_kms_and_endpoint" {
  command = plan

  variables {
    name                            = "orders"
    bucket_name                     = "acme-orders-log"
    bucket_prefix                   = "prod/orders"
    binary_url                      = "s3://acme-artifacts/strata/strata"
    kms_key_arn                     = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-1111-2222-333344445555"
    produce_bytes_per_broker_target = 33554432
    client_cidr_blocks              = ["10.0.0.0/8", "192.168.0.0/16"]
    create_s3_endpoint              = true
    route_table_ids                 = ["rtb-0123456789abcdef0"]
    shutdown_timeout_seconds        = 300
  }

  assert {
    condition = (
      aws_autoscaling_policy.produce_bytes[0].target_tracking_configuration[0].target_value == 33554432 &&
      aws_autoscaling_policy.produce_bytes[0].target_tracking_configuration[0].customized_metric_specification[0].metric_name == "strata_bytes_in_per_second" &&
      aws_autoscaling_policy.produce_bytes[0].target_tracking_configuration[0].customized_metric_specification[0].namespace == "Strata" &&
      aws_autoscaling_policy.produce_bytes[0].target_tracking_configuration[0].customized_metric_specification[0].statistic == "Average"
    )
    error_message = "the produce policy tracks the mean strata_bytes_in_per_second per broker"
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.broker.user_data), "^strata_bytes_in_per_second$")
    error_message = "the CloudWatch agent must publish the metric the produce policy tracks"
  }

  # The S3 statements: the named bucket's prefix and the binary object.
  assert {
    condition = toset(flatten([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : s.Resource
      if anytrue([for a in s.Action : startswith(a, "s3:")])
      ])) == toset([
      "arn:aws:s3:::acme-orders-log",
      "arn:aws:s3:::acme-orders-log/prod/orders/*",
      "arn:aws:s3:::acme-artifacts/strata/strata",
    ])
    error_message = "S3 access is the cluster's prefix plus the one binary object"
  }

  assert {
    condition = one([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : s.Resource
      if contains(s.Action, "kms:GenerateDataKey")
    ]) == ["arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-1111-2222-333344445555"]
    error_message = "the brokers may use the bucket's KMS key, and no other"
  }

  assert {
    condition = (
      one([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : one(r.apply_server_side_encryption_by_default).sse_algorithm]) == "aws:kms" &&
      one([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : r.bucket_key_enabled])
    )
    error_message = "with a key: SSE-KMS with a bucket key"
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.broker.user_data), "store = \"s3://acme-orders-log/prod/orders\"") && strcontains(base64decode(aws_launch_template.broker.user_data), "TimeoutStopSec=330")
    error_message = "the store URL and the stop bound follow the variables"
  }

  assert {
    condition     = aws_autoscaling_lifecycle_hook.drain.heartbeat_timeout == 450
    error_message = "the hook waits shutdown_timeout + 30 s (systemd) + 120 s"
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.broker_clients) == 4 && aws_vpc_security_group_ingress_rule.broker_admin.cidr_ipv4 == "10.20.0.0/16"
    error_message = "client CIDRs widen the client ports, never the admin port"
  }

  assert {
    condition     = aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3[0].service_name == "com.amazonaws.eu-west-1.s3"
    error_message = "an S3 gateway endpoint when asked for"
  }
}

run "authentication_is_on_by_default_and_tls_off" {
  command = apply

  assert {
    condition     = strcontains(base64decode(aws_launch_template.broker.user_data), "\n[auth]\nenabled = true\nsuper_users = [\"admin\"]\n")
    error_message = "by default the user data must turn authentication on with admin as the super user"
  }

  # [auth] comes after extra_config, which may hold top-level keys.
  assert {
    condition     = length(split("[auth]", split("STRATA_EXTRA_CONFIG\n", base64decode(aws_launch_template.broker.user_data))[1])) == 2
    error_message = "the [auth] section must follow extra_config"
  }

  assert {
    condition = (
      !strcontains(base64decode(aws_launch_template.broker.user_data), "[tls]") &&
      !strcontains(base64decode(aws_launch_template.broker.user_data), "secretsmanager") &&
      !strcontains(base64decode(aws_launch_template.broker.user_data), "scheme: https") &&
      strcontains(base64decode(aws_launch_template.broker.user_data), "advertised_addr = \"http://$PRIVATE_IP:50051\"")
    )
    error_message = "without tls_secret_arn: no [tls] section, no secret read, http:// advertised"
  }

  assert {
    condition = alltrue(flatten([
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : [for a in s.Action : !startswith(a, "secretsmanager:")]
    ]))
    error_message = "without tls_secret_arn the brokers' role must not reach Secrets Manager"
  }

  assert {
    condition     = alltrue([for tg in aws_lb_target_group.broker : tg.health_check[0].protocol == "HTTP"])
    error_message = "without TLS the health check is plain HTTP"
  }

  assert {
    condition     = output.auth_enabled && !output.tls_enabled
    error_message = "the outputs say authentication is on and TLS off"
  }

  assert {
    condition     = output.create_admin_command == "AWS_REGION=eu-west-1 strata user add admin --password-file admin.pw --store s3://strata-123456789012-eu-west-1/strata"
    error_message = "create_admin_command creates the first super user in the cluster's store"
  }
}

run "tls_from_the_secret_reaches_every_listener" {
  command = apply

  variables {
    tls_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-AbC123"
    tls_client_auth = "requested"
    super_users     = ["root", "ops@example.com"]
    extra_config    = "maintenance_interval = \"1s\"\n[wal]\nmin_interval = \"10ms\""
  }

  # GetSecretValue on exactly this secret, in one statement, and nowhere else.
  assert {
    condition = [
      for s in jsondecode(aws_iam_role_policy.broker.policy).Statement : { actions = s.Action, resources = s.Resource }
      if anytrue([for a in s.Action : startswith(a, "secretsmanager:")])
      ] == [{
        actions   = ["secretsmanager:GetSecretValue"]
        resources = ["arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-AbC123"]
    }]
    error_message = "the brokers' role may get the value of the TLS secret and of no other"
  }

  assert {
    condition = alltrue([
      for tg in aws_lb_target_group.broker :
      tg.health_check[0].protocol == "HTTPS" && tg.health_check[0].path == "/readyz" && tg.health_check[0].port == "9464"
    ])
    error_message = "with TLS the health check asks https /readyz (the admin endpoint serves TLS only)"
  }

  assert {
    condition = alltrue([
      for needle in [
        "aws secretsmanager get-secret-value --region 'eu-west-1'",
        "TLS_SECRET_ARN='arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-AbC123'",
        "install -m 0600 -o strata -g strata /dev/null \"/etc/strata/tls/$field.pem\"",
        "advertised_addr = \"https://$PRIVATE_IP:50051\"",
        "\n[auth]\nenabled = true\nsuper_users = [\"root\",\"ops@example.com\"]\n",
        "\n[tls]\ncert = \"/etc/strata/tls/cert.pem\"\nkey = \"/etc/strata/tls/key.pem\"\n",
        "peer_ca = \"/etc/strata/tls/ca.pem\"",
        "client_ca = \"/etc/strata/tls/ca.pem\"\nclient_auth = \"requested\"\n",
        "scheme: https",
        "maintenance_interval = \"1s\"\n[wal]\nmin_interval = \"10ms\"\nSTRATA_EXTRA_CONFIG",
      ] : strcontains(base64decode(aws_launch_template.broker.user_data), needle)
    ])
    error_message = "the user data must fetch the secret, write the certificate files and the [auth] and [tls] sections, and advertise https://"
  }

  # The secret is read (and the files written) before the configuration
  # that names them and before the broker starts.
  assert {
    condition = (
      length(split("get-secret-value", split("cat > /etc/strata/strata.toml", base64decode(aws_launch_template.broker.user_data))[0])) == 2 &&
      length(split("[tls]", split("STRATA_EXTRA_CONFIG\n", base64decode(aws_launch_template.broker.user_data))[1])) == 2
    )
    error_message = "the secret must be read before the configuration is written, and [tls] must follow extra_config"
  }

  assert {
    condition     = output.grpc_bootstrap == "https://strata-nlb-0123456789abcdef.elb.eu-west-1.amazonaws.com:50051"
    error_message = "with TLS grpc_bootstrap is an https:// URL"
  }

  assert {
    condition     = output.auth_enabled && output.tls_enabled
    error_message = "the outputs say authentication and TLS are on"
  }

  assert {
    condition     = output.create_admin_command == "AWS_REGION=eu-west-1 strata user add root --password-file root.pw --store s3://strata-123456789012-eu-west-1/strata"
    error_message = "create_admin_command names the first super user"
  }
}

run "tls_secret_in_another_region_and_no_client_certificates" {
  command = plan

  variables {
    tls_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:shared/strata-tls-Zz9Yy8"
  }

  assert {
    condition = (
      strcontains(base64decode(aws_launch_template.broker.user_data), "aws secretsmanager get-secret-value --region 'us-east-1'") &&
      strcontains(base64decode(aws_launch_template.broker.user_data), "[tls]") &&
      !strcontains(base64decode(aws_launch_template.broker.user_data), "client_ca") &&
      !strcontains(base64decode(aws_launch_template.broker.user_data), "client_auth")
    )
    error_message = "the secret is read in its own region; without tls_client_auth no client certificates are asked for"
  }
}

run "authentication_can_be_turned_off" {
  command = apply

  variables {
    auth_enabled = false
  }

  assert {
    condition     = strcontains(base64decode(aws_launch_template.broker.user_data), "\n[auth]\nenabled = false\n")
    error_message = "auth_enabled = false writes enabled = false"
  }

  assert {
    condition     = !output.auth_enabled && output.create_admin_command == null
    error_message = "no admin to create when authentication is off"
  }
}
