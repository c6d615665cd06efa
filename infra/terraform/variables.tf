variable "project_id" {
  description = "The Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions, scheduler jobs and buckets. Null uses the manifest's defaults.region."
  type        = string
  default     = null
}

variable "name_prefix" {
  description = "Prefix of deployed names (functions, service accounts, scheduler jobs, source bucket), to keep several environments in one project apart. Empty: the function names are the manifest's (close_bucket -> close-bucket)."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([a-z][a-z0-9]{0,5})?$", var.name_prefix))
    error_message = "name_prefix must be empty or 1-6 lower-case letters or digits, starting with a letter."
  }
}

variable "repo_root" {
  description = "Root of the Backbeat checkout. Null means two levels above this module."
  type        = string
  default     = null
}

variable "manifest_path" {
  description = "Path of functions/manifest.yaml. Null means <repo_root>/functions/manifest.yaml."
  type        = string
  default     = null
}

variable "dist_dir" {
  description = "Folder holding one <function>.zip per function, as built by `make package`. Null means <repo_root>/dist/functions."
  type        = string
  default     = null
}

variable "bucket_names" {
  description = "Real bucket name per logical bucket of the manifest (e.g. {events = \"my-events\"}). Missing keys default to <project_id>-<manifest default>."
  type        = map(string)
  default     = {}
}

variable "source_bucket_name" {
  description = "Bucket holding the functions' source zips. Null means <project_id>-<name_prefix>-function-sources."
  type        = string
  default     = null
}

variable "bucket_location" {
  description = "Location of the buckets. Null means the region."
  type        = string
  default     = null
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region such as europe-west1 or a multi-region such as eur3). Null means the region."
  type        = string
  default     = null
}

variable "kms_key_name" {
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) for CMEK on buckets, topics, functions and Firestore. Null keeps Google-managed keys. The service agents of Storage, Pub/Sub, Cloud Functions and Firestore need roles/cloudkms.cryptoKeyEncrypterDecrypter on it."
  type        = string
  default     = null
}

variable "delivery" {
  description = "How Pub/Sub and bucket events reach event functions: pubsub_push (explicit push subscriptions with a dead-letter policy; bucket events via a Cloud Storage notification) or eventarc (the function's own Eventarc trigger; retry policy but no dead-letter topic)."
  type        = string
  default     = "pubsub_push"

  validation {
    condition     = contains(["pubsub_push", "eventarc"], var.delivery)
    error_message = "delivery must be pubsub_push or eventarc."
  }
}

variable "function_delivery" {
  description = "Per-function override of var.delivery, keyed by manifest function name."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for v in values(var.function_delivery) : contains(["pubsub_push", "eventarc"], v)])
    error_message = "Every function_delivery value must be pubsub_push or eventarc."
  }
}

variable "http_invokers" {
  description = "Per http function (manifest name), the IAM members allowed to invoke it, e.g. {recommend = [\"serviceAccount:api@p.iam.gserviceaccount.com\"]}. Public members are rejected."
  type        = map(list(string))
  default     = {}

  validation {
    condition = alltrue(flatten([
      for members in values(var.http_invokers) : [for m in members : !contains(["allUsers", "allAuthenticatedUsers"], m)]
    ]))
    error_message = "http_invokers must not contain allUsers or allAuthenticatedUsers: Backbeat functions are never public."
  }
}

variable "http_ingress" {
  description = "Ingress of http functions: ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB (behind an external load balancer). Event functions are always internal-only."
  type        = string
  default     = "ALLOW_INTERNAL_ONLY"

  validation {
    condition     = contains(["ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB"], var.http_ingress)
    error_message = "http_ingress must be ALLOW_INTERNAL_ONLY or ALLOW_INTERNAL_AND_GCLB."
  }
}

variable "force_destroy" {
  description = "Let `terraform destroy` delete non-empty buckets. Keep false outside throw-away projects."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the Firestore database against deletion."
  type        = bool
  default     = true
}

variable "noncurrent_version_days" {
  description = "Days a non-current (overwritten or deleted) object version is kept in the versioned buckets."
  type        = number
  default     = 30
}

variable "labels" {
  description = "Labels added to every labelled resource."
  type        = map(string)
  default     = {}
}
