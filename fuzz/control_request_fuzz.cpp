// A render request on the node daemon's control socket (transport/control.capnp RenderRequest,
// as NodeControl.render receives it), read from bytes as a message with the socket's own limits,
// then checked as the daemon checks it: the token, and the parameters (fromControl()).
#include <capnp/serialize.h>

#include <cstring>

#include "fuzz/fuzz_target.h"
#include "transport/control_convert.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kj::Array<capnp::word> words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, words.size() * sizeof(capnp::word));
  capnp::ReaderOptions options;
  options.traversalLimitInWords = pl::kMaxControlMessageBytes / sizeof(capnp::word);
  kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader message(words, options);
    auto request = message.getRoot<pl::ctl::RenderRequest>();
    const capnp::Text::Reader token = request.getToken();
    (void)pl::validControlToken(std::string(token.begin(), token.size()));
    (void)pl::fromControl(request.getParams());
    (void)request.getDataBytes();
  });
  return 0;
}

std::vector<std::vector<uint8_t>> pl::fuzz::seeds() {
  capnp::MallocMessageBuilder m;
  auto request = m.initRoot<pl::ctl::RenderRequest>();
  request.setToken("0a1b2c3d");
  request.setDataBytes(123456);
  pl::RenderJobParams params;
  params.width = 640;
  params.height = 480;
  params.spp = 64;
  params.peers = {"127.0.0.1:7000", "[::1]:7001"};
  params.noMdns = true;
  params.primaryName = "host/42";
  params.timeLimitMs = 3000;
  pl::toControl(params, request.initParams());
  kj::Array<capnp::word> words = capnp::messageToFlatArray(m);
  auto bytes = words.asBytes();
  return {std::vector<uint8_t>(bytes.begin(), bytes.end())};
}
