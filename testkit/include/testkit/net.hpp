// testkit/net.hpp - loopback helpers.
#pragma once

#include <string>

namespace testkit {

// A TCP port on 127.0.0.1 that was free a moment ago (bound with port 0 and
// released). Prefer letting the program bind port 0 itself and print the
// port; use this only for programs that cannot.
int free_port();

// True when something accepts TCP connections on 127.0.0.1:port.
bool port_accepts(int port);

}  // namespace testkit
