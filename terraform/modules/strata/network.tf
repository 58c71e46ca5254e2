# Security groups, the bootstrap load balancer and the optional S3 gateway
# endpoint.
#
# Who reaches what:
#   clients (client_cidr_blocks)  -> load balancer and brokers: Kafka, gRPC
#   load balancer                 -> brokers: Kafka, gRPC, HTTP (/readyz)
#   brokers                       -> brokers: Kafka, gRPC, HTTP
#   the VPC's CIDR                -> brokers: HTTP (/metrics, /readyz) only
#   brokers                       -> anywhere on 443 (S3, CloudWatch Logs,
#                                    Auto Scaling, the binary, dnf)

resource "aws_security_group" "lb" {
  name        = "${var.name}-lb"
  description = "Strata bootstrap load balancer: clients to Kafka and gRPC"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-lb" })
}

resource "aws_security_group" "broker" {
  name        = "${var.name}-broker"
  description = "Strata brokers: clients, the load balancer and other brokers"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${var.name}-broker" })
}

locals {
  client_ports = {
    kafka = local.kafka_port
    grpc  = local.grpc_port
  }
  broker_ports = merge(local.client_ports, { http = local.http_port })

  # One rule per (port, client CIDR).
  client_rules = {
    for pair in setproduct(keys(local.client_ports), local.client_cidrs) :
    "${pair[0]}-${pair[1]}" => { port = local.client_ports[pair[0]], cidr = pair[1], what = pair[0] }
  }
}

# --- load balancer

resource "aws_vpc_security_group_ingress_rule" "lb_clients" {
  for_each          = local.client_rules
  security_group_id = aws_security_group.lb.id
  description       = "clients to the ${each.value.what} listener"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_egress_rule" "lb_to_brokers" {
  for_each                     = local.broker_ports
  security_group_id            = aws_security_group.lb.id
  description                  = "load balancer to the brokers' ${each.key} port (traffic and health checks)"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.broker.id
}

# --- brokers

resource "aws_vpc_security_group_ingress_rule" "broker_clients" {
  for_each          = local.client_rules
  security_group_id = aws_security_group.broker.id
  description       = "clients to the ${each.value.what} port (the advertised address of each broker)"
  ip_protocol       = "tcp"
  from_port         = each.value.port
  to_port           = each.value.port
  cidr_ipv4         = each.value.cidr
}

resource "aws_vpc_security_group_ingress_rule" "broker_from_lb" {
  for_each                     = local.broker_ports
  security_group_id            = aws_security_group.broker.id
  description                  = "load balancer to the ${each.key} port"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.lb.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_from_brokers" {
  for_each                     = local.broker_ports
  security_group_id            = aws_security_group.broker.id
  description                  = "brokers to each other on the ${each.key} port"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_ingress_rule" "broker_admin" {
  security_group_id = aws_security_group.broker.id
  description       = "the VPC to the admin HTTP port (/metrics, /healthz, /readyz)"
  ip_protocol       = "tcp"
  from_port         = local.http_port
  to_port           = local.http_port
  cidr_ipv4         = local.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "broker_to_brokers" {
  for_each                     = local.broker_ports
  security_group_id            = aws_security_group.broker.id
  description                  = "brokers to each other on the ${each.key} port"
  ip_protocol                  = "tcp"
  from_port                    = each.value
  to_port                      = each.value
  referenced_security_group_id = aws_security_group.broker.id
}

resource "aws_vpc_security_group_egress_rule" "broker_https" {
  security_group_id = aws_security_group.broker.id
  description       = "HTTPS to S3, CloudWatch Logs, Auto Scaling, the binary and the package repositories"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# --- bootstrap load balancer

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:Access logs of a TCP bootstrap listener show connection tuples only (clients move to the brokers' own addresses after bootstrap); enable them outside the module if an audit needs them.
  #checkov:skip=CKV_AWS_150:Deletion protection is var.lb_deletion_protection (off by default so that a trial cluster destroys in one command; the load balancer holds no state).
  name                             = "${var.name}-nlb"
  internal                         = true
  load_balancer_type               = "network"
  subnets                          = var.subnet_ids
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.lb_deletion_protection
  tags                             = local.tags
}

resource "aws_lb_target_group" "broker" {
  for_each = local.client_ports

  name        = "${var.name}-${each.key}"
  port        = each.value
  protocol    = "TCP"
  vpc_id      = var.vpc_id
  target_type = "instance"

  # Bootstrap connections are short: a stopping broker leaves quickly (it
  # has turned /readyz to 503 when it began to drain).
  deregistration_delay = 30

  # With TLS the admin endpoint is https only; the load balancer does not
  # verify the certificate, and presents none (hence no
  # tls_client_auth = "required").
  health_check {
    enabled             = true
    protocol            = local.tls_enabled ? "HTTPS" : "HTTP"
    port                = tostring(local.http_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "broker" {
  for_each = local.client_ports

  load_balancer_arn = aws_lb.this.arn
  port              = each.value
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.broker[each.key].arn
  }

  tags = local.tags
}

# --- S3 without the NAT gateway

resource "aws_vpc_endpoint" "s3" {
  count             = var.create_s3_endpoint ? 1 : 0
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.route_table_ids
  tags              = merge(local.tags, { Name = "${var.name}-s3" })
}
