# Reads functions/manifest.yaml, the one source of truth for the wiring, and normalises it.
#
# This file holds locals only: no resource, data source or module reference. That keeps it pure
# (yamldecode, fileset, file and variables), so tests/unit/test_terraform.py can evaluate it with
# `terraform console` on a machine where the google provider cannot be downloaded, and compare
# Terraform's reading of the manifest with the Python loader's (backbeat.stack.manifest).

locals {
  repo_root     = var.repo_root != null ? var.repo_root : abspath("${path.module}/../..")
  manifest_path = var.manifest_path != null ? var.manifest_path : "${local.repo_root}/functions/manifest.yaml"
  dist_dir      = var.dist_dir != null ? var.dist_dir : "${local.repo_root}/dist/functions"
  manifest      = yamldecode(file(local.manifest_path))
  defaults      = try(local.manifest.defaults, {})
  region        = var.region != null ? var.region : try(local.defaults.region, "europe-west1")

  # One event type per sub-folder holding versioned Avro schemas: <schemas_dir>/<type>/v<N>.avsc.
  schemas_dir = "${local.repo_root}/${try(local.manifest.event_types.schemas_dir, "lib/delivery/schemas")}"
  event_types = sort(distinct([
    for f in fileset(local.schemas_dir, "*/v*.avsc") : split("/", f)[0] if can(regex("^[a-z][a-z0-9_]*$", split("/", f)[0]))
  ]))

  # Logical bucket name -> real bucket name (override with var.bucket_names).
  bucket_names = {
    for key, b in try(local.manifest.buckets, {}) :
    key => lookup(var.bucket_names, key, "${var.project_id}-${try(b.default, key)}")
  }

  # Placeholders of manifest env values (the loader allows exactly these): ${project}, ${bucket.<name>}.
  env_vars = { project = var.project_id, bucket = local.bucket_names }

  # "<prefix>-" before every deployed name; the Python loader's deployed_name when the prefix is empty.
  prefix_dash = var.name_prefix == "" ? "" : "${var.name_prefix}-"

  functions = {
    for name, f in local.manifest.functions : name => {
      name          = name
      deployed_name = "${local.prefix_dash}${replace(name, "_", "-")}"
      source        = try(f.source, "functions/${name}")
      zip_path      = "${local.dist_dir}/${name}.zip"
      entry_point   = f.entry_point
      signature     = try(f.signature, "cloudevent")
      runtime       = try(f.runtime, local.defaults.runtime, "python311")
      region        = try(f.region, local.region)
      memory        = try(f.memory, local.defaults.memory, "256Mi")
      cpu           = try(f.cpu, local.defaults.cpu, null)
      timeout_s     = try(f.timeout_s, local.defaults.timeout_s, 60)
      max_instances = try(f.max_instances, local.defaults.max_instances, 10)
      min_instances = try(f.min_instances, local.defaults.min_instances, 0)
      retry         = try(f.retry, local.defaults.retry, true)
      max_attempts  = try(f.max_delivery_attempts, local.defaults.max_delivery_attempts, 5)
      kind = (
        can(f.trigger.topic) ? "topic" :
        can(f.trigger.bucket) ? "bucket" :
        can(f.trigger.schedule) ? "schedule" :
        try(f.signature, "cloudevent") == "http" || can(f.trigger.http) ? "http" : "none"
      )
      # "{event_type}" in a topic expands to one trigger topic per event type.
      topics = can(f.trigger.topic) ? (
        strcontains(f.trigger.topic, "{event_type}")
        ? [for t in local.event_types : replace(f.trigger.topic, "{event_type}", t)]
        : [f.trigger.topic]
      ) : []
      bucket            = can(f.trigger.bucket) ? f.trigger.bucket : null
      prefix            = try(f.trigger.prefix, "")
      schedule          = try(f.trigger.schedule, null)
      dead_letter_topic = try(f.dead_letter_topic, "${replace(name, "_", "-")}-dead-letter")
      roles             = sort(distinct(try(f.roles, [])))
      publishes         = sort(distinct(try(f.publishes, [])))
      delivery          = lookup(var.function_delivery, name, var.delivery)
      env = {
        # tostring first (YAML booleans become "true"/"false", as in the loader): templatestring
        # only takes a direct reference to a string.
        for k, v in { for k2, v2 in try(f.env, {}) : k2 => tostring(v2) } : k => templatestring(v, local.env_vars)
      }
    }
  }

  # The topic each Pub/Sub-delivered function listens on, per trigger kind.
  tick_topics   = { for n, f in local.functions : n => "tick.${n}" if f.kind == "schedule" }
  notify_topics = { for n, f in local.functions : n => "bucket.${n}" if f.kind == "bucket" && f.delivery == "pubsub_push" }
  source_topics = {
    for n, f in local.functions : n => (
      f.kind == "topic" ? f.topics :
      f.kind == "schedule" ? [local.tick_topics[n]] :
      contains(keys(local.notify_topics), n) ? [local.notify_topics[n]] : []
    )
  }

  dead_letter_topics = toset([for n, f in local.functions : f.dead_letter_topic if f.kind != "http"])

  # Every topic the platform needs: declared, triggers, ticks, bucket notifications, publishes, dead letters.
  topic_names = toset(concat(
    try(local.manifest.topics, []),
    flatten(values(local.source_topics)),
    flatten([for f in local.functions : f.publishes]),
    tolist(local.dead_letter_topics),
  ))
}
