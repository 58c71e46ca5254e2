# The example wires the security inputs through to the module: with a
# secret, TLS and authentication are on and the first administrator's
# command is an output.
#
#   terraform init -backend=false -plugin-dir=/opt/tf-plugins && terraform test

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_region" {
    defaults = { name = "us-east-1" }
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
  mock_resource "aws_lb_target_group" {
    defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/strata/0123456789abcdef" }
  }
  mock_resource "aws_launch_template" {
    defaults = {
      id             = "lt-0123456789abcdef0"
      latest_version = 1
    }
  }
  mock_resource "aws_lb" {
    defaults = {
      arn      = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/strata-nlb/0123456789abcdef"
      dns_name = "strata-nlb-0123456789abcdef.elb.us-east-1.amazonaws.com"
    }
  }
}

variables {
  vpc_id          = "vpc-0123456789abcdef0"
  subnet_ids      = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
  route_table_ids = ["rtb-0123456789abcdef0"]
  binary_url      = "s3://my-artifacts/strata/0.1.0/aarch64-linux/strata"
  tls_secret_arn  = "arn:aws:secretsmanager:us-east-1:123456789012:secret:strata/tls-AbC123"
}

run "tls_and_authentication_are_on" {
  command = apply

  assert {
    condition     = output.tls_enabled && output.auth_enabled
    error_message = "the example deploys TLS and authentication"
  }

  assert {
    condition     = output.grpc_bootstrap == "https://strata-nlb-0123456789abcdef.elb.us-east-1.amazonaws.com:50051"
    error_message = "grpc_bootstrap is https://"
  }

  assert {
    condition     = output.create_admin_command == "AWS_REGION=us-east-1 strata user add admin --password-file admin.pw --store s3://strata-123456789012-us-east-1/strata"
    error_message = "create_admin_command creates admin in the cluster's store"
  }
}

run "a_trial_without_tls_is_an_explicit_choice" {
  command = apply

  variables {
    tls_secret_arn = null
  }

  assert {
    condition     = !output.tls_enabled && output.auth_enabled && startswith(output.grpc_bootstrap, "http://")
    error_message = "tls_secret_arn = null turns TLS off and keeps authentication on"
  }
}
