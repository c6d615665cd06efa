Feature: Buckets are private
  Backbeat's buckets hold raw events and function sources: never readable from outside the project.

  Scenario: Buckets use uniform bucket-level access (no object ACLs)
    Given I have google_storage_bucket defined
    Then it must contain uniform_bucket_level_access
    And its value must be true

  Scenario: Buckets enforce public access prevention
    Given I have google_storage_bucket defined
    Then it must contain public_access_prevention
    And its value must be enforced

  Scenario: Buckets keep versions (a closed hour is never silently overwritten)
    Given I have google_storage_bucket defined
    Then it must contain versioning
    And it must contain enabled
    And its value must be true
