terraform {
  # 1.9: variable validations may refer to other variables (min_size <=
  # max_size); `terraform test` with mock providers needs 1.7.
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }
}
