pub mod cri_log;
