# Bad inputs are refused at plan time, naming the variable.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }
  mock_data "aws_vpc" {
    defaults = { cidr_block = "10.20.0.0/16" }
  }
  mock_data "aws_ssm_parameter" {
    defaults = { insecure_value = "ami-0123456789abcdef0" }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = { arn = "arn:aws:iam::123456789012:instance-profile/strata-broker" }
  }
}

variables {
  vpc_id     = "vpc-0123456789abcdef0"
  subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
  binary_url = "https://downloads.example.com/strata"
}

run "valid_inputs_plan" {
  command = plan
}

run "one_subnet_is_refused" {
  command = plan
  variables {
    subnet_ids = ["subnet-0123456789abcdef0"]
  }
  expect_failures = [var.subnet_ids]
}

run "repeated_subnet_is_refused" {
  command = plan
  variables {
    subnet_ids = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef0"]
  }
  expect_failures = [var.subnet_ids]
}

run "bad_name_is_refused" {
  command = plan
  variables {
    name = "Strata_Prod"
  }
  expect_failures = [var.name]
}

run "long_name_is_refused" {
  command = plan
  variables {
    name = "a-name-that-is-far-too-long"
  }
  expect_failures = [var.name]
}

run "bad_vpc_id_is_refused" {
  command = plan
  variables {
    vpc_id = "my-vpc"
  }
  expect_failures = [var.vpc_id]
}

run "plain_http_binary_is_refused" {
  command = plan
  variables {
    binary_url = "http://downloads.example.com/strata"
  }
  expect_failures = [var.binary_url]
}

run "bad_checksum_is_refused" {
  command = plan
  variables {
    binary_sha256 = "not-a-checksum"
  }
  expect_failures = [var.binary_sha256]
}

run "min_size_above_max_size_is_refused" {
  command = plan
  variables {
    min_size = 5
    max_size = 3
  }
  expect_failures = [var.max_size]
}

run "zero_brokers_is_refused" {
  command = plan
  variables {
    min_size = 0
  }
  expect_failures = [var.min_size]
}

run "cpu_target_out_of_range_is_refused" {
  command = plan
  variables {
    cpu_target_percent = 150
  }
  expect_failures = [var.cpu_target_percent]
}

run "tiny_produce_target_is_refused" {
  command = plan
  variables {
    produce_bytes_per_broker_target = 1000
  }
  expect_failures = [var.produce_bytes_per_broker_target]
}

run "prefix_with_slashes_is_refused" {
  command = plan
  variables {
    bucket_prefix = "/strata/"
  }
  expect_failures = [var.bucket_prefix]
}

run "bad_bucket_name_is_refused" {
  command = plan
  variables {
    bucket_name = "Strata_Bucket"
  }
  expect_failures = [var.bucket_name]
}

run "open_to_the_internet_is_refused" {
  command = plan
  variables {
    client_cidr_blocks = ["0.0.0.0/0"]
  }
  expect_failures = [var.client_cidr_blocks]
}

run "endpoint_without_route_tables_is_refused" {
  command = plan
  variables {
    create_s3_endpoint = true
  }
  expect_failures = [var.route_table_ids]
}

run "drain_bound_beyond_the_hook_limit_is_refused" {
  command = plan
  variables {
    shutdown_timeout_seconds = 7200
  }
  expect_failures = [var.shutdown_timeout_seconds]
}

run "extra_config_cannot_override_the_broker_id" {
  command = plan
  variables {
    extra_config = "broker_id = 7\n"
  }
  expect_failures = [var.extra_config]
}

run "unknown_architecture_is_refused" {
  command = plan
  variables {
    architecture = "riscv64"
  }
  expect_failures = [var.architecture]
}

run "bad_log_retention_is_refused" {
  command = plan
  variables {
    log_retention_days = 10
  }
  expect_failures = [var.log_retention_days]
}

run "bad_kms_key_is_refused" {
  command = plan
  variables {
    kms_key_arn = "alias/strata"
  }
  expect_failures = [var.kms_key_arn]
}

run "extra_config_cannot_set_auth" {
  command = plan
  variables {
    extra_config = "[auth]\nenabled = false\n"
  }
  expect_failures = [var.extra_config]
}

run "extra_config_cannot_set_tls_with_dotted_keys" {
  command = plan
  variables {
    extra_config = "tls.cert = \"/etc/ssl/strata.pem\"\n"
  }
  expect_failures = [var.extra_config]
}

run "extra_config_cannot_set_a_tls_table" {
  command = plan
  variables {
    extra_config = "[wal]\nmin_interval = \"10ms\"\n[ tls ]\ncert = \"/etc/ssl/strata.pem\"\n"
  }
  expect_failures = [var.extra_config]
}

run "extra_config_with_other_sections_plans" {
  command = plan
  variables {
    extra_config = "maintenance_interval = \"1s\"\n[kafka]\nauto_create_topics = false\n"
  }
}

run "super_user_with_a_space_is_refused" {
  command = plan
  variables {
    super_users = ["admin", "alice smith"]
  }
  expect_failures = [var.super_users]
}

run "super_user_with_the_principal_prefix_is_refused" {
  command = plan
  variables {
    super_users = ["User:admin"]
  }
  expect_failures = [var.super_users]
}

run "repeated_super_user_is_refused" {
  command = plan
  variables {
    super_users = ["admin", "admin"]
  }
  expect_failures = [var.super_users]
}

run "partial_secret_arn_is_refused" {
  command = plan
  variables {
    tls_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls"
  }
  expect_failures = [var.tls_secret_arn]
}

run "secret_name_instead_of_arn_is_refused" {
  command = plan
  variables {
    tls_secret_arn = "strata/tls"
  }
  expect_failures = [var.tls_secret_arn]
}

run "unknown_client_auth_is_refused" {
  command = plan
  variables {
    tls_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-AbC123"
    tls_client_auth = "optional"
  }
  expect_failures = [var.tls_client_auth]
}

run "required_client_auth_is_refused_because_of_the_health_check" {
  command = plan
  variables {
    tls_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-AbC123"
    tls_client_auth = "required"
  }
  expect_failures = [var.tls_client_auth]
}

run "client_auth_without_tls_is_refused" {
  command = plan
  variables {
    tls_client_auth = "requested"
  }
  expect_failures = [var.tls_client_auth]
}

run "requested_client_auth_with_tls_plans" {
  command = plan
  variables {
    tls_secret_arn  = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:strata/tls-AbC123"
    tls_client_auth = "requested"
  }
}
