# The brokers' role: what `strata serve` does to the bucket (list, get, put
# with If-None-Match, delete, abort multipart uploads) on the cluster's
# prefix and nothing else, plus what the instance itself needs: write its
# logs, complete its own termination lifecycle action, and (optionally)
# read the binary, use the KMS key and read the TLS secret.

resource "aws_iam_role" "broker" {
  name                 = "${var.name}-broker"
  description          = "Strata brokers of cluster ${var.name}: the bucket prefix ${local.bucket_name}/${var.bucket_prefix}"
  assume_role_policy   = jsonencode(local.assume_role_policy)
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "broker" {
  name   = "strata-broker"
  role   = aws_iam_role.broker.id
  policy = jsonencode(local.broker_policy)
}

resource "aws_iam_instance_profile" "broker" {
  name = "${var.name}-broker"
  role = aws_iam_role.broker.name
  tags = local.tags
}

locals {
  assume_role_policy = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  }

  bucket_statements = [
    {
      # object_store lists with prefix=<bucket_prefix>/...: the condition
      # keeps listings inside the cluster's prefix.
      Sid      = "ListClusterPrefix"
      Effect   = "Allow"
      Action   = ["s3:ListBucket"]
      Resource = [local.bucket_arn]
      Condition = {
        StringLike = { "s3:prefix" = [var.bucket_prefix, "${var.bucket_prefix}/*"] }
      }
    },
    {
      # PutObject also covers CreateMultipartUpload, UploadPart and
      # CompleteMultipartUpload; GetObject covers HEAD. No ACL, tagging,
      # versioning or bucket-configuration actions.
      Sid      = "ReadWriteClusterObjects"
      Effect   = "Allow"
      Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
      Resource = ["${local.bucket_arn}/${var.bucket_prefix}/*"]
    },
  ]

  binary_statements = local.binary_s3_arn == null ? [] : [{
    Sid      = "ReadBrokerBinary"
    Effect   = "Allow"
    Action   = ["s3:GetObject"]
    Resource = [local.binary_s3_arn]
  }]

  kms_statements = var.kms_key_arn == null ? [] : [{
    Sid      = "UseBucketKey"
    Effect   = "Allow"
    Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
    Resource = [var.kms_key_arn]
  }]

  # The TLS certificate and key, read by each instance at boot: this one
  # secret, nothing when TLS is off.
  tls_statements = var.tls_secret_arn == null ? [] : [{
    Sid      = "ReadTlsSecret"
    Effect   = "Allow"
    Action   = ["secretsmanager:GetSecretValue"]
    Resource = [var.tls_secret_arn]
  }]

  instance_statements = [
    {
      # The CloudWatch agent ships the broker's log and the Prometheus
      # metrics (as embedded metric format) into the module's log groups.
      Sid      = "WriteLogs"
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      Resource = flatten([for arn in local.log_group_arns : [arn, "${arn}:log-stream:*"]])
    },
    {
      # An instance tells its group it has drained (templates/user_data).
      # Only this group; the instance id comes from the instance itself.
      Sid      = "CompleteOwnLifecycleAction"
      Effect   = "Allow"
      Action   = ["autoscaling:CompleteLifecycleAction", "autoscaling:RecordLifecycleActionHeartbeat"]
      Resource = [local.asg_arn]
    },
  ]

  broker_policy = {
    Version   = "2012-10-17"
    Statement = concat(local.bucket_statements, local.binary_statements, local.kms_statements, local.tls_statements, local.instance_statements)
  }
}
