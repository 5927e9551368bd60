//! End-to-end tests: real guests on /dev/kvm. Helpers shared by the tests in tests/tests/.
