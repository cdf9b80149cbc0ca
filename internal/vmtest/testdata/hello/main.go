// Command hello is shipped into a guest by vmtest's tests to prove BuildStatic: it prints a greeting (a
// dynamically linked binary would not even start in the guest, which has no libc).
package main

import "fmt"

func main() { fmt.Println("hello from a static binary") }
