# The brokers: a launch template (IMDSv2 only; the user data installs the
# binary, writes /etc/strata/strata.toml and runs `strata serve` under
# systemd), an autoscaling group over subnet_ids, a termination lifecycle
# hook that gives a broker time to drain, and target tracking on CPU (and
# optionally on produce bytes per broker).

resource "aws_cloudwatch_log_group" "broker" {
  #checkov:skip=CKV_AWS_338:Retention is var.log_retention_days (30 by default): broker logs are for operations, not an archive.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "metrics" {
  #checkov:skip=CKV_AWS_338:Holds the CloudWatch agent's embedded-metric-format records of /metrics, from which CloudWatch extracts the metrics; one day is all they are needed for.
  name              = local.metrics_log_group_name
  retention_in_days = 1
  kms_key_id        = var.kms_key_arn
  tags              = local.tags
}

locals {
  user_data = templatefile("${path.module}/templates/user_data.sh.tftpl", {
    binary_url               = var.binary_url
    binary_sha256            = var.binary_sha256 == null ? "" : var.binary_sha256
    store_url                = local.store_url
    region                   = local.region
    kafka_port               = local.kafka_port
    grpc_port                = local.grpc_port
    http_port                = local.http_port
    shutdown_timeout_seconds = var.shutdown_timeout_seconds
    stop_timeout_seconds     = local.stop_timeout_seconds
    extra_config             = var.extra_config
    asg_name                 = local.asg_name
    lifecycle_hook_name      = local.lifecycle_hook_name
    log_group_name           = local.log_group_name
    metrics_log_group_name   = local.metrics_log_group_name
    metrics_namespace        = var.metrics_namespace
    auth_enabled             = var.auth_enabled
    super_users              = var.super_users
    tls_enabled              = local.tls_enabled
    tls_secret_arn           = local.tls_enabled ? var.tls_secret_arn : ""
    tls_secret_region        = local.tls_secret_region
    tls_client_auth          = var.tls_client_auth == null ? "" : var.tls_client_auth
    grpc_scheme              = local.grpc_scheme
  })
}

resource "aws_launch_template" "broker" {
  name_prefix   = "${var.name}-broker-"
  description   = "Strata broker of cluster ${var.name}"
  image_id      = local.ami_id
  instance_type = var.instance_type
  ebs_optimized = true
  user_data     = base64encode(local.user_data)

  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.broker.arn
  }

  vpc_security_group_ids = [aws_security_group.broker.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  monitoring {
    enabled = var.detailed_monitoring
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_size
      encrypted             = true
      kms_key_id            = var.kms_key_arn
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.name}-broker" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${var.name}-broker" })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "broker" {
  name                = local.asg_name
  vpc_zone_identifier = var.subnet_ids
  min_size            = var.min_size
  max_size            = var.max_size
  # desired_capacity is left to the scaling policies after creation.
  target_group_arns = [for tg in aws_lb_target_group.broker : tg.arn]

  # A broker that stays not ready (503 on /readyz) is replaced; the grace
  # period covers boot, the download and opening the partitions.
  health_check_type         = "ELB"
  health_check_grace_period = 300
  default_instance_warmup   = 180

  launch_template {
    id      = aws_launch_template.broker.id
    version = aws_launch_template.broker.latest_version
  }

  # A new launch template version (a new binary, new settings) rolls
  # through the group one broker at a time; each replaced broker drains
  # through the lifecycle hook below.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 66
      instance_warmup        = 180
    }
  }

  enabled_metrics = ["GroupInServiceInstances", "GroupDesiredCapacity", "GroupTerminatingInstances"]

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${var.name}-broker" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

# Scale-in, instance refresh, a failed health check: the group moves the
# instance to Terminating:Wait, the instance's strata-lifecycle service sees
# it (IMDS autoscaling/target-lifecycle-state), runs `systemctl stop strata`
# (SIGTERM: the broker drains, its partitions move to the other brokers,
# and it exits 0 within shutdown_timeout), then completes this action. If
# that never comes, the group terminates the instance after the heartbeat
# timeout anyway (CONTINUE): acknowledged records are in the bucket either
# way, and the next owners replay the unsealed tails.
resource "aws_autoscaling_lifecycle_hook" "drain" {
  name                   = local.lifecycle_hook_name
  autoscaling_group_name = aws_autoscaling_group.broker.name
  lifecycle_transition   = "autoscaling:EC2_INSTANCE_TERMINATING"
  heartbeat_timeout      = local.hook_heartbeat_seconds
  default_result         = "CONTINUE"
}

resource "aws_autoscaling_policy" "cpu" {
  name                   = "${var.name}-cpu"
  autoscaling_group_name = aws_autoscaling_group.broker.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
    target_value = var.cpu_target_percent
  }
}

# strata_bytes_in_per_second (produce bytes/s over the last heartbeat
# interval), published by the CloudWatch agent with the group's name as
# its only dimension, so its Average is the mean per broker.
resource "aws_autoscaling_policy" "produce_bytes" {
  count                  = var.produce_bytes_per_broker_target == null ? 0 : 1
  name                   = "${var.name}-produce-bytes"
  autoscaling_group_name = aws_autoscaling_group.broker.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    customized_metric_specification {
      namespace   = var.metrics_namespace
      metric_name = "strata_bytes_in_per_second"
      statistic   = "Average"
      metric_dimension {
        name  = "AutoScalingGroupName"
        value = aws_autoscaling_group.broker.name
      }
    }
    target_value = var.produce_bytes_per_broker_target
  }
}
