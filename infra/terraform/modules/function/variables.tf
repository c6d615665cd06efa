variable "project_id" {
  description = "Project of the function."
  type        = string
}

variable "region" {
  description = "Region of the function, its Eventarc trigger and its scheduler job."
  type        = string
}

variable "name" {
  description = "Manifest name of the function ([a-z][a-z0-9_]{2,30}); the deployed name defaults to it with - for _."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{2,30}$", var.name))
    error_message = "name must match [a-z][a-z0-9_]{2,30}."
  }
}

variable "deployed_name" {
  description = "Name of the deployed function and prefix of its other resources; null means the name with - for _."
  type        = string
  default     = null

  validation {
    condition     = var.deployed_name == null || can(regex("^[a-z][a-z0-9-]{2,40}$", var.deployed_name))
    error_message = "deployed_name must match [a-z][a-z0-9-]{2,40}."
  }
}

variable "description" {
  description = "Description of the function."
  type        = string
  default     = ""
}

variable "runtime" {
  description = "Cloud Functions runtime, e.g. python311."
  type        = string
  default     = "python311"
}

variable "entry_point" {
  description = "Name of the Python function in main.py that functions-framework serves."
  type        = string
}

variable "signature" {
  description = "functions-framework signature: cloudevent (event functions) or http."
  type        = string
  default     = "cloudevent"

  validation {
    condition     = contains(["cloudevent", "http"], var.signature)
    error_message = "signature must be cloudevent or http."
  }
}

variable "memory" {
  description = "Memory of one instance, 2nd-gen notation (256Mi, 1Gi...)."
  type        = string
  default     = "256Mi"
}

variable "cpu" {
  description = "CPUs of one instance (e.g. \"1\", \"2\"); null lets Cloud Functions derive it from the memory."
  type        = string
  default     = null
}

variable "timeout_s" {
  description = "Request timeout in seconds (event functions: at most 540)."
  type        = number
  default     = 60
}

variable "max_instances" {
  description = "Maximum number of instances."
  type        = number
  default     = 10
}

variable "min_instances" {
  description = "Minimum number of warm instances."
  type        = number
  default     = 0
}

variable "env" {
  description = "Runtime environment variables."
  type        = map(string)
  default     = {}
}

variable "roles" {
  description = "Exactly the project roles of the function's dedicated service account (from the manifest). roles/pubsub.publisher is granted per topic of var.publishes instead of project-wide when publishes is not empty."
  type        = list(string)
  default     = []
}

variable "publishes" {
  description = "Topics the function publishes to, name => topic id; the service account gets roles/pubsub.publisher on each."
  type        = map(string)
  default     = {}
}

variable "labels" {
  description = "Labels of the function and the subscriptions."
  type        = map(string)
  default     = {}
}

variable "kms_key_name" {
  description = "Optional CMEK key of the function (its source and image); null keeps Google-managed keys."
  type        = string
  default     = null
}

variable "source_bucket" {
  description = "Bucket the source zip is uploaded to."
  type        = string
}

variable "source_zip" {
  description = "Local path of the function's zip, built by `make package` (dist/functions/<name>.zip)."
  type        = string
}

variable "trigger_kind" {
  description = "topic (Pub/Sub topics), bucket (object finalize), schedule (Cloud Scheduler -> Pub/Sub tick topic) or http."
  type        = string

  validation {
    condition     = contains(["topic", "bucket", "schedule", "http"], var.trigger_kind)
    error_message = "trigger_kind must be topic, bucket, schedule or http (the manifest must give a cloudevent function exactly one trigger)."
  }
}

variable "delivery" {
  description = "pubsub_push: one explicit push subscription per source topic, with retry and dead-letter policies (bucket events come through a Cloud Storage notification topic). eventarc: the function's own Eventarc trigger (retry policy, no dead-letter topic)."
  type        = string
  default     = "pubsub_push"

  validation {
    condition     = contains(["pubsub_push", "eventarc"], var.delivery)
    error_message = "delivery must be pubsub_push or eventarc."
  }
}

variable "retry" {
  description = "Retry on failure. eventarc: RETRY_POLICY_RETRY vs RETRY_POLICY_DO_NOT_RETRY. pubsub_push: Pub/Sub always redelivers; false caps delivery attempts at the minimum (5) before dead-lettering."
  type        = bool
  default     = true
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before a message goes to the dead-letter topic (Pub/Sub accepts 5-100)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

variable "source_topics" {
  description = "Topics the function is triggered by, name => topic id: the expanded trigger topics, the tick topic of a schedule, or the notification topic of a bucket trigger (pubsub_push)."
  type        = map(string)
  default     = {}
}

variable "trigger_bucket" {
  description = "Bucket of an object-finalize trigger."
  type        = string
  default     = null
}

variable "trigger_prefix" {
  description = "Object prefix of a bucket trigger. pubsub_push filters it in the Cloud Storage notification; Eventarc cannot, so the function also checks it in code."
  type        = string
  default     = ""
}

variable "schedule" {
  description = "Cron schedule (UTC) of a schedule trigger."
  type        = string
  default     = null
}

variable "dead_letter_topic_id" {
  description = "Dead-letter topic id of the push subscriptions (event functions)."
  type        = string
  default     = null
}

variable "pubsub_service_agent" {
  description = "IAM member of the Pub/Sub service agent (serviceAccount:service-<number>@gcp-sa-pubsub.iam.gserviceaccount.com), which must subscribe to a subscription to dead-letter its messages."
  type        = string
  default     = null
}

variable "invokers" {
  description = "IAM members allowed to invoke an http function. Public members are rejected."
  type        = list(string)
  default     = []

  validation {
    condition     = !contains(var.invokers, "allUsers") && !contains(var.invokers, "allAuthenticatedUsers")
    error_message = "invokers must not contain allUsers or allAuthenticatedUsers."
  }
}

variable "http_ingress" {
  description = "Ingress of an http function: ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB. Event functions are always ALLOW_INTERNAL_ONLY."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.http_ingress)
    error_message = "http_ingress must be ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}
