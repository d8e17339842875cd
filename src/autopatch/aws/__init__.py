"""AutoPatch on AWS: Lambda handlers over the engine steps, the Step Functions driver, wiring (docs/aws.md)."""
