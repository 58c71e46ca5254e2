# The bucket: the cluster's only source of truth. Private, owner-enforced
# (no ACLs), encrypted, reachable over TLS only, and incomplete multipart
# uploads are aborted so a broker that died mid-upload leaves nothing billed.

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Server access logs would need a second bucket and log every WAL PUT and heartbeat (several requests per broker per second); CloudTrail data events are the place for an audit trail when one is wanted.
  #checkov:skip=CKV_AWS_21:Versioning is deliberately off: every Strata object is written create-only (If-None-Match) and deleted only by the broker's retention and garbage collection; versions would keep every deleted WAL object billed.
  #checkov:skip=CKV_AWS_144:Cross-region replication doubles the storage and request cost; Strata's durability is S3's (eleven nines in one region). Add replication outside this module when a second region is required.
  #checkov:skip=CKV2_AWS_62:Event notifications have no consumer here: brokers learn of new objects from manifests and heartbeats, not from bucket events.
  bucket        = local.bucket_name
  force_destroy = var.bucket_force_destroy
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    # One data key per bucket rather than per object: without it every WAL
    # PUT and every GET would also be a KMS request.
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  # Versioning stays off (see aws_s3_bucket.this); should someone turn it on,
  # deleted objects do not stay billed for long.
  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = jsonencode(local.bucket_policy)

  # The policy can only be attached once public policies are blocked
  # (otherwise a race with the block can make the put fail).
  depends_on = [aws_s3_bucket_public_access_block.this]
}

locals {
  bucket_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyOldTls"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
        Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
      },
    ]
  }
}
