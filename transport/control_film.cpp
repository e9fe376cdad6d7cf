#include "transport/control_film.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <kj/debug.h>

#include "transport/control_convert.h"

namespace pl {

namespace {

class FilmDataImpl final : public ctl::FilmData::Server {
 public:
  explicit FilmDataImpl(std::shared_ptr<const Film> film) : film_(std::move(film)) {}

 protected:
  kj::Promise<void> read(ReadContext context) override {
    readFilmSlice(film_->sums(), film_->pixelSamples(), context.getParams().getOffset(),
                  context.getParams().getBytes(), [&](size_t n) {
                    return context.getResults().initData(unsigned(n)).asBytes();
                  });
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<const Film> film_;
};

// What readFilm() fills, slice by slice.
struct FilmRead {
  Film film;
  std::vector<int64_t> sums;
  std::vector<uint32_t> counts;
  uint64_t total = 0, offset = 0;
  ctl::FilmData::Client data;
};

kj::Promise<void> readSlices(FilmRead& r) {
  if (r.offset >= r.total) return kj::READY_NOW;
  auto request = r.data.readRequest();
  request.setOffset(r.offset);
  request.setBytes(uint32_t(std::min<uint64_t>(kControlChunkBytes, r.total - r.offset)));
  return request.send().then([&r](auto reply) -> kj::Promise<void> {
    capnp::Data::Reader slice = reply.getData();
    KJ_REQUIRE(slice.size() > 0 && slice.size() <= r.total - r.offset,
               "film: a slice of the wrong size", slice.size());
    storeFilmSlice(r.sums, r.counts, r.offset, slice);
    r.offset += slice.size();
    return readSlices(r);
  });
}

}  // namespace

void readFilmSlice(const std::vector<int64_t>& sums, const std::vector<uint32_t>& counts,
                   uint64_t offset, uint32_t bytes,
                   const std::function<kj::ArrayPtr<kj::byte>(size_t n)>& init) {
  const uint64_t sumBytes = uint64_t(sums.size()) * sizeof(int64_t);
  const uint64_t total = sumBytes + uint64_t(counts.size()) * sizeof(uint32_t);
  KJ_REQUIRE(bytes <= kControlChunkBytes, "film: a read of more than 4 MiB", bytes);
  KJ_REQUIRE(offset <= total, "film: a read beyond the film", offset, total);
  const size_t n = size_t(std::min<uint64_t>(bytes, total - offset));
  kj::ArrayPtr<kj::byte> data = init(n);
  forFilmStreamParts(offset, n, sumBytes, [&](bool isCounts, uint64_t from, size_t to, size_t m) {
    const auto* part = isCounts ? reinterpret_cast<const uint8_t*>(counts.data())
                                : reinterpret_cast<const uint8_t*>(sums.data());
    std::memcpy(data.begin() + to, part + from, m);
  });
}

void storeFilmSlice(std::vector<int64_t>& sums, std::vector<uint32_t>& counts, uint64_t offset,
                    kj::ArrayPtr<const kj::byte> slice) {
  const uint64_t sumBytes = uint64_t(sums.size()) * sizeof(int64_t);
  forFilmStreamParts(offset, slice.size(), sumBytes,
                     [&](bool isCounts, uint64_t to, size_t from, size_t m) {
                       auto* part = isCounts ? reinterpret_cast<uint8_t*>(counts.data())
                                             : reinterpret_cast<uint8_t*>(sums.data());
                       std::memcpy(part + to, slice.begin() + from, m);
                     });
}

void toControl(const Film& film, uint64_t generation, ctl::FilmInfo::Builder out) {
  out.setGeneration(generation);
  out.setSpp(film.samplesPerPixel());
  out.setWidth(film.width());
  out.setHeight(film.height());
  out.setChannels(film.channels());
  out.setSumBytes(uint64_t(film.sums().size()) * sizeof(int64_t));
  out.setSamplesBytes(uint64_t(film.pixelSamples().size()) * sizeof(uint32_t));
}

ctl::FilmData::Client serveFilm(std::shared_ptr<const Film> film) {
  return kj::heap<FilmDataImpl>(std::move(film));
}

kj::Promise<Result<Film>> readFilm(ctl::FilmInfo::Reader info, ctl::FilmData::Client data) {
  const uint64_t pixels = uint64_t(info.getWidth()) * info.getHeight();
  const uint64_t sumBytes = pixels * info.getChannels() * sizeof(int64_t);
  if (info.getWidth() == 0 || info.getHeight() == 0 || info.getChannels() == 0 ||
      info.getChannels() > 64 || sumBytes > (uint64_t(4) << 30) ||
      info.getSumBytes() != sumBytes ||
      (info.getSamplesBytes() != 0 && info.getSamplesBytes() != pixels * sizeof(uint32_t)))
    return Result<Film>(Error{"film: an inconsistent description (" +
                              std::to_string(info.getWidth()) + "x" +
                              std::to_string(info.getHeight()) + ", " +
                              std::to_string(info.getChannels()) + " channels, " +
                              std::to_string(info.getSumBytes()) + " bytes of sums)"});
  auto r = kj::heap<FilmRead>(FilmRead{
      Film(info.getWidth(), info.getHeight(), info.getSpp(), info.getChannels()),
      std::vector<int64_t>(size_t(sumBytes / sizeof(int64_t))),
      std::vector<uint32_t>(info.getSamplesBytes() ? size_t(pixels) : 0),
      sumBytes + info.getSamplesBytes(), 0, kj::mv(data)});
  FilmRead& ref = *r;
  return readSlices(ref).then([r = kj::mv(r)]() mutable -> Result<Film> {
    if (Status st = r->film.setSums(std::move(r->sums)); !st.ok()) return st.error();
    if (Status st = r->film.setPixelSamples(std::move(r->counts)); !st.ok()) return st.error();
    return std::move(r->film);
  }, [](kj::Exception&& e) -> Result<Film> {
    return Error{std::string("film: ") + e.getDescription().cStr()};
  });
}

}  // namespace pl
