#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <set>

#include "storage/fault_file_system.h"
#include "storage/file_system.h"
#include "storage/memory_file_system.h"

namespace hamq::storage {
namespace {

// A fresh directory under the system's temp dir, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "hamq-storage-XXXXXX").string();
    HAMQ_VERIFY(::mkdtemp(pattern.data()) != nullptr, "mkdtemp");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Subject {
  std::unique_ptr<TempDir> temp;
  std::unique_ptr<FileSystem> fs;
  std::string dir;
};

using Factory = std::function<Subject()>;

class EveryFileSystem : public testing::TestWithParam<std::pair<const char*, Factory>> {
 protected:
  void SetUp() override {
    subject_ = GetParam().second();
    ASSERT_TRUE(subject_.fs->make_dir(subject_.dir));
  }
  FileSystem& fs() { return *subject_.fs; }
  std::string path(const std::string& name) { return subject_.dir + "/" + name; }
  Subject subject_;
};

TEST_P(EveryFileSystem, AppendedBytesReadBackAndSurviveReopening) {
  {
    auto file = fs().open(path("a"), OpenMode::create_new);
    ASSERT_TRUE(file);
    ASSERT_TRUE((*file)->append("hello "));
    ASSERT_TRUE((*file)->append("world"));
    ASSERT_TRUE((*file)->sync());
    EXPECT_EQ((*file)->size(), 11u);
    std::string out;
    ASSERT_TRUE((*file)->read(6, 100, out));
    EXPECT_EQ(out, "world");
  }
  auto again = fs().open(path("a"), OpenMode::open_existing);
  ASSERT_TRUE(again);
  std::string out;
  ASSERT_TRUE((*again)->read(0, 11, out));
  EXPECT_EQ(out, "hello world");
}

TEST_P(EveryFileSystem, TruncateCutsTheFile) {
  auto file = fs().open(path("a"), OpenMode::create_new);
  ASSERT_TRUE(file);
  ASSERT_TRUE((*file)->append("0123456789"));
  ASSERT_TRUE((*file)->truncate(4));
  ASSERT_TRUE((*file)->append("x"));
  std::string out;
  ASSERT_TRUE((*file)->read(0, 100, out));
  EXPECT_EQ(out, "0123x");
}

TEST_P(EveryFileSystem, CreateNewRefusesAnExistingFileAndOpenExistingAMissingOne) {
  ASSERT_TRUE(fs().open(path("a"), OpenMode::create_new));
  EXPECT_FALSE(fs().open(path("a"), OpenMode::create_new));
  auto missing = fs().open(path("b"), OpenMode::open_existing);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

TEST_P(EveryFileSystem, ListAndRemoveSeeNamesInTheDirectory) {
  ASSERT_TRUE(fs().open(path("a"), OpenMode::create_new));
  ASSERT_TRUE(fs().open(path("b"), OpenMode::create_new));
  ASSERT_TRUE(fs().sync_dir(subject_.dir));
  auto names = fs().list(subject_.dir);
  ASSERT_TRUE(names);
  std::sort(names->begin(), names->end());
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b"}));
  ASSERT_TRUE(fs().remove(path("a")));
  names = fs().list(subject_.dir);
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, (std::vector<std::string>{"b"}));
  EXPECT_FALSE(fs().remove(path("a")));
}

INSTANTIATE_TEST_SUITE_P(
    Storage, EveryFileSystem,
    testing::Values(std::make_pair("posix", Factory([] {
                                     Subject subject;
                                     subject.temp = std::make_unique<TempDir>();
                                     subject.fs = make_posix_file_system();
                                     subject.dir = subject.temp->path() + "/data";
                                     return subject;
                                   })),
                    std::make_pair("memory", Factory([] {
                                     Subject subject;
                                     subject.fs = std::make_unique<MemoryFileSystem>();
                                     subject.dir = "data";
                                     return subject;
                                   })),
                    std::make_pair("fault", Factory([] {
                                     Subject subject;
                                     subject.fs = std::make_unique<FaultFileSystem>(1);
                                     subject.dir = "data";
                                     return subject;
                                   }))),
    [](const auto& param_info) { return std::string(param_info.param.first); });

class FaultFileSystemTest : public testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(fs_.make_dir("d")); }
  std::unique_ptr<File> create(const std::string& name) {
    auto file = fs_.open("d/" + name, OpenMode::create_new);
    HAMQ_VERIFY(file.ok(), "create");
    HAMQ_VERIFY(fs_.sync_dir("d").ok(), "sync_dir");
    return std::move(file.value());
  }
  FaultFileSystem fs_{42};
};

TEST_F(FaultFileSystemTest, UnsyncedBytesAreLostInACrash) {
  auto file = create("a");
  ASSERT_TRUE(file->append("synced"));
  ASSERT_TRUE(file->sync());
  ASSERT_TRUE(file->append("lost"));
  fs_.crash({.tear_unsynced = false});
  EXPECT_EQ(fs_.contents("d/a"), "synced");
}

TEST_F(FaultFileSystemTest, ATornWriteKeepsAPrefixOfTheUnsyncedBytes) {
  std::set<size_t> sizes_seen;
  for (int round = 0; round < 40; ++round) {
    auto file = create("t" + std::to_string(round));
    ASSERT_TRUE(file->append("synced"));
    ASSERT_TRUE(file->sync());
    ASSERT_TRUE(file->append("0123456789"));
    fs_.crash({.tear_unsynced = true});
    auto contents = fs_.contents("d/t" + std::to_string(round));
    ASSERT_TRUE(contents);
    EXPECT_EQ(std::string("synced0123456789").substr(0, contents->size()), *contents);
    EXPECT_GE(contents->size(), 6u);
    sizes_seen.insert(contents->size());
  }
  EXPECT_GT(sizes_seen.size(), 3u);  // tears land at different places
}

TEST_F(FaultFileSystemTest, ACreatedNameIsLostUnlessTheDirectoryWasSynced) {
  auto file = fs_.open("d/new", OpenMode::create_new);
  ASSERT_TRUE(file);
  ASSERT_TRUE((*file)->append("data"));
  ASSERT_TRUE((*file)->sync());
  fs_.crash({});
  EXPECT_FALSE(fs_.contents("d/new"));
}

TEST_F(FaultFileSystemTest, ARemovedNameComesBackUnlessTheDirectoryWasSynced) {
  auto file = create("a");
  ASSERT_TRUE(file->append("data"));
  ASSERT_TRUE(file->sync());
  ASSERT_TRUE(fs_.remove("d/a"));
  EXPECT_FALSE(fs_.contents("d/a"));
  fs_.crash({});
  EXPECT_EQ(fs_.contents("d/a"), "data");
  ASSERT_TRUE(fs_.remove("d/a"));
  ASSERT_TRUE(fs_.sync_dir("d"));
  fs_.crash({});
  EXPECT_FALSE(fs_.contents("d/a"));
}

TEST_F(FaultFileSystemTest, NoSpaceFailsTheWriteAfterAPrefixAndThenWritesWork) {
  auto file = create("a");
  fs_.fail_next_write(Errc::no_space);
  auto written = file->append("0123456789");
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::no_space);
  EXPECT_LE(file->size(), 10u);
  ASSERT_TRUE(file->truncate(0));
  ASSERT_TRUE(file->append("ok"));
  EXPECT_EQ(fs_.contents("d/a"), "ok");
}

TEST_F(FaultFileSystemTest, AFailedSyncLeavesTheBytesUndurable) {
  auto file = create("a");
  ASSERT_TRUE(file->append("data"));
  fs_.fail_next_sync();
  auto synced = file->sync();
  ASSERT_FALSE(synced);
  EXPECT_EQ(synced.error().code, Errc::io);
  fs_.crash({.tear_unsynced = false});
  EXPECT_EQ(fs_.contents("d/a"), "");
}

TEST_F(FaultFileSystemTest, AStoppedMachineChangesNothingAndOldHandlesDieInTheCrash) {
  auto file = create("a");
  fs_.stop_after(1);
  ASSERT_TRUE(file->append("one"));
  EXPECT_FALSE(file->append("two"));
  EXPECT_FALSE(file->sync());
  EXPECT_TRUE(fs_.stopped());
  fs_.crash({.tear_unsynced = false});
  EXPECT_FALSE(fs_.stopped());
  EXPECT_FALSE(file->append("three"));  // a handle of the dead process
  EXPECT_EQ(fs_.contents("d/a"), "");
}

}  // namespace
}  // namespace hamq::storage
